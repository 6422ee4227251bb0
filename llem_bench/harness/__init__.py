"""Running one experiment: warmup, measured cycles, metrics and statistics."""
