"""tau-models: pi0 / pi0.5 vision-language-action models with FAST actions, knowledge insulation and LeRobot checkpoint I/O."""

__version__ = "0.1.0"
