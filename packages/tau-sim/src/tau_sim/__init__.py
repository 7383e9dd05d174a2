"""tau-sim: Gymnasium simulation evaluators: LIBERO and a fast built-in task family, vectorised."""

__version__ = "0.1.0"
