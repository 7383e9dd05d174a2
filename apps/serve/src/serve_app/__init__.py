"""`apps/serve`: a tau command line."""
