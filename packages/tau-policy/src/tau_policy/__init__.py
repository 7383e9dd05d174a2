"""tau-policy: everything between a trained pi0 / pi0.5 model and an environment or a robot.

The policy bundle (model + normaliser with every norm head + sample layout + provenance), the acting adapter
(observation in, actions in robot units out), episode recording (LeRobot v3.0) and the policy server.
"""

__version__ = "0.1.0"

__all__: list[str] = []
