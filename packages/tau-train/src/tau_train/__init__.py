"""tau-train: A distributed training loop on accelerate with exact resume."""

__version__ = "0.1.0"
