"""Server-rendered pages for raters: the labelling screen."""
