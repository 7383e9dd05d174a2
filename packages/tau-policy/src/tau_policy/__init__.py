"""tau-policy: everything between a trained pi0 / pi0.5 model and an environment or a robot.

    bundle = PolicyBundle.from_mixture(model, mixture, provenance=Provenance(source="runs/x", step=3000))
    bundle.save("runs/x/policy")              # model/, normalizer.json (every head), bundle.json (layouts)
    policy = load_policy("runs/x/policy", head="aloha")   # folder or hub id; head: norm head / robot / dataset
    policy = load_policy("lerobot/pi05_libero")           # also LeRobot (+ processors), OpenTau and openpi folders
    actions = policy.act({"observation.images.top": uint8 (B, H, W, 3), "observation.state": (B, D)}, prompts)
    sim_policy = SimPolicy(policy, guidance_weight=1.5, seed=0)   # tau-sim's Policy protocol
    policy = load_policy(folder, rtc="inpaint"); policy.act(obs, prompts, action_prefix=executing)  # real-time chunking
    queue = ActionQueue(infer, refill_below=5)   # execute a chunk while the next is computed (queue.next_action())
    record_episodes(episodes, "data/rollouts", robot_type="tau_sim_tabletop", extras=episode_labels)

Observations are built into samples with tau-data's build_sample (the training path); actions come back in robot
units (unnormalised with the head's statistics, sliced to its real action size, clipped to its layout's range).

Serving lives in tau_policy.serving, its one public place (PolicyServer, serve_until_signal, ServerThread,
RemotePolicy, ObservationKeys, resolve_keys, PRESETS, ...): a Policy behind openpi's websocket protocol, and
tau-sim's Policy protocol acting through such a server. It is a subpackage so that acting does not load websockets.
"""

from tau_policy.action_queue import ActionQueue
from tau_policy.bundle import BUNDLE_FORMAT, PolicyBundle, Provenance, read_layouts, read_model_config
from tau_policy.foreign import detect_format
from tau_policy.layout import PolicyLayout
from tau_policy.openpi_format import save_openpi
from tau_policy.policy import Policy, load_policy
from tau_policy.recording import episode_labels, record_episodes
from tau_policy.sim import SimPolicy

__version__ = "0.1.0"

__all__ = [
    "ActionQueue",
    "BUNDLE_FORMAT",
    "Policy",
    "PolicyBundle",
    "PolicyLayout",
    "Provenance",
    "SimPolicy",
    "detect_format",
    "episode_labels",
    "load_policy",
    "read_layouts",
    "read_model_config",
    "record_episodes",
    "save_openpi",
]
