"""Reads: querysets and aggregates, with one access gate per object kind."""
