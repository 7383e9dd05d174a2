"""`apps/rl`: a tau command line."""
