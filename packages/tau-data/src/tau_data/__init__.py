"""tau-data: LeRobot datasets (v2.1, v3.0), weighted heterogeneous mixtures, normalisation and a resumable loader."""

__version__ = "0.1.0"
