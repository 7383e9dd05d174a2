"""`apps/data`: a tau command line."""
