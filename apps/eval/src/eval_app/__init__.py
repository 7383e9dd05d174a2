"""`apps/eval`: a tau command line."""
