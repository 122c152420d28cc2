"""Demo data: licensed samples of human-labelled data sets and the demo's example history."""
