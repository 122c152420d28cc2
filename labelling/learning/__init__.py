"""Agreement statistics and consensus methods over plain Python and numpy data (no Django)."""
