"""Two RECAP iterations end to end on tiny models, a few short episodes and a few training steps."""

import functools
import json

import numpy as np
import pytest
from conftest import shared_dir
from tau_data import LeRobotDataset
from tau_policy import record_episodes
from tau_sim import ExpertConfig
from tau_sim.demos import generate_demos

from tau_rl import RecapConfig, run_recap
from tau_rl.advantage_table import AdvantageTable
from tau_rl.config import AdvantageStageConfig, EvalSettings, PolicyStageConfig, TrainingSettings, ValueStageConfig
from tau_rl.layout import RunLayout
from tau_rl.returns import ReturnConfig, recap_columns
from tau_rl.rollouts import ROBOT_TYPE, CollectConfig

TASK = "tabletop/push_red_to_target"
STEPS = 30
ENV = {"image_size": 32, "max_episode_steps": STEPS}


def tiny_config(run_dir, demos) -> RecapConfig:
    tokenizer = str(shared_dir() / "parity" / "pi05_tiny_a" / "tokenizer")
    tiny_train = TrainingSettings(steps=3, batch_size=4, lr=1e-3, warmup_steps=0, checkpoint_every=2)
    return RecapConfig(
        run_dir=str(run_dir), iterations=2, tasks=[TASK], demos=[str(demos)], env_kwargs=ENV,
        returns=ReturnConfig(max_episode_steps=STEPS, failure_penalty=60.0),
        collect=CollectConfig(episodes_per_task=3, num_envs=3, intervention_rate=0.5),
        value=ValueStageConfig(preset="tiny", overrides={"tokenizer_name": tokenizer, "tokenizer_max_length": 64},
                               init_from_policy=True, use_state=True, train=tiny_train, predict_batch_size=32),
        advantages=AdvantageStageConfig(lookahead=5),
        policy=PolicyStageConfig(preset="tiny", overrides={"tokenizer_name": tokenizer, "tokenizer_max_length": 64,
                                                           "max_state_dim": 4, "max_action_dim": 4, "chunk_size": 5,
                                                           "num_inference_steps": 2},
                                 sft=tiny_train, finetune=tiny_train, guidance_weight=1.5, demo_fraction=0.5,
                                 positive_sample_fraction=0.7),
        eval=EvalSettings(episodes_per_task=3, num_envs=3, videos_per_task=1),
    )


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos") / "tabletop_demos"
    episodes = generate_demos([TASK], 4, seed=0, expert=ExpertConfig(action_noise=0.2, mistake_rate=0.5),
                              env_kwargs=ENV)
    record_episodes(episodes, root, robot_type=ROBOT_TYPE, extras=functools.partial(recap_columns, failure_penalty=60.0))
    return root


def test_two_iterations_end_to_end_and_resume(tmp_path, demos):
    config = tiny_config(tmp_path / "run", demos)
    summary = run_recap(config)
    layout = RunLayout(tmp_path / "run")
    assert [row["iteration"] for row in summary["iterations"]] == [0, 1, 2]
    for row in summary["iterations"]:
        assert 0.0 <= row["success_rate"] <= 1.0 and row["episodes"] == 3
        assert row["ci95"][0] <= row["success_rate"] <= row["ci95"][1]
    assert "| policy | success | 95% CI | episodes |" in (layout.root / "summary.md").read_text()
    for index in (1, 2):
        folder = layout.iteration(index)
        assert folder.is_complete()
        rollouts = LeRobotDataset(folder.rollouts)
        assert len(rollouts.episodes) == 3
        assert {"success", "intervention", "reward"} <= set(rollouts.columns)
        value_config = json.loads((folder.value / "model" / "config.json").read_text())
        assert value_config["state_dim"] == 2  # use_state: the policy's real state dims feed the value model
        assert (folder.policy / "model" / "model.safetensors").is_file()
        assert folder.calibration_png.stat().st_size > 1000 and folder.histogram_png.stat().st_size > 1000
        threshold = json.loads(folder.threshold.read_text())
        assert 0.0 < threshold["positive_fraction"] <= 0.3 + 1 / threshold["num_frames"]
        # positive_sample_fraction=0.7: positive frames are drawn more often than their share of the frames
        assert folder.record("policy")["positive_sample_share"] > threshold["positive_fraction"]
        # every source of this iteration has its own advantage table, aligned with the dataset's frames
        sources = ["demos_0"] + [f"iter_{k:03d}" for k in range(1, index + 1)]
        assert sorted(p.stem for p in folder.advantages.glob("*.parquet")) == sources
        table = AdvantageTable.load(folder.advantages / f"iter_{index:03d}.parquet")
        assert len(table) == len(rollouts)
        assert np.isfinite(table.columns["advantage"]).all()
        np.testing.assert_array_equal(table.columns["positive"][table.columns["intervention"]], True)
        iteration_summary = json.loads(folder.summary.read_text())
        assert iteration_summary["iteration"] == index and iteration_summary["eval_episodes"] == 3
        # tau-sim names why each failed evaluation episode failed
        failed = 3 - folder.record("evaluate")["successes"]
        assert sum(iteration_summary["failure_modes"].values()) == failed
    # iteration 1's advantages are kept when iteration 2 computes its own
    assert (layout.iteration(1).advantages / "demos_0.parquet").is_file()

    # simulate a crash inside iteration 2's policy stage: its marker and exported model are gone
    folder = layout.iteration(2)
    for stage in ("policy", "evaluate", "summary"):
        folder.marker(stage).unlink()
    untouched = folder.marker("advantages").stat().st_mtime_ns
    rollouts_mtime = (folder.rollouts / "meta" / "info.json").stat().st_mtime_ns
    run_recap(config)
    assert folder.is_complete()
    assert folder.marker("advantages").stat().st_mtime_ns == untouched
    assert (folder.rollouts / "meta" / "info.json").stat().st_mtime_ns == rollouts_mtime


def test_resume_refuses_a_changed_config(tmp_path, demos):
    config = tiny_config(tmp_path / "run", demos)
    config.iterations = 1
    config.policy.sft.steps = 1
    config.policy.finetune.steps = 1
    config.value.train.steps = 1
    run_recap(config)
    # a run started before a setting existed resumes: the missing setting counts as its default
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    del saved["advantages"]["demos_positive"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    run_recap(config)
    config.advantages.demos_positive = True
    with pytest.raises(ValueError, match="advantages"):
        run_recap(config)
    config.advantages.demos_positive = False
    config.advantages.lookahead = 7
    with pytest.raises(ValueError, match="advantages"):
        run_recap(config)


def test_a_checkpoint_without_sft_starts_as_it_was_trained(tmp_path, demos):
    from tau_models import PiModel

    from tau_rl.models import new_policy
    from tau_rl.stages import init_policy

    first = tiny_config(tmp_path / "first", demos)
    first.policy.sft.steps = 1
    init_policy(first, RunLayout(tmp_path / "first"))
    # a checkpoint trained elsewhere: no advantage conditioning, its own normaliser beside its model/ folder
    checkpoint = tmp_path / "elsewhere"
    new_policy("tiny", first.policy.overrides).save_pretrained(checkpoint / "model")
    saved = json.loads((RunLayout(tmp_path / "first").init.policy / "normalizer.json").read_text())
    saved["modes"] = {key: "MEAN_STD" for key in saved["modes"]}  # not what tau-data would compute by default
    (checkpoint / "normalizer.json").write_text(json.dumps(saved))
    second = tiny_config(tmp_path / "second", demos)
    second.policy.checkpoint, second.policy.sft.steps = str(checkpoint / "model"), 0
    record = init_policy(second, RunLayout(tmp_path / "second"))
    started = RunLayout(tmp_path / "second").init.policy
    assert record["train"] == {}
    assert json.loads((started / "normalizer.json").read_text())["modes"] == saved["modes"]
    assert not PiModel.from_pretrained(started / "model").config.advantage_conditioning  # its prompts, unchanged


def _positive_line_flow_loss(model, mixture, rows) -> float:
    """Flow loss of `model` on demo frames whose prompts carry "Advantage: positive" (fixed noise and times)."""
    import torch
    from tau_models import SampleTokenizer
    from torch.utils.data import default_collate

    tokenize = SampleTokenizer(model.config)
    batch = default_collate([tokenize(mixture[row], advantage=True) for row in rows])
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(batch["actions"].shape, generator=generator)
    time = torch.rand(len(rows), generator=generator) * 0.9 + 0.05
    model.eval()
    with torch.no_grad():
        return float(model(batch, noise=noise, time=time)["flow_loss"])


def test_the_conditioned_initial_pass_teaches_the_advantage_line_and_keeps_dropout(tmp_path, demos):
    from tau_models import PiModel

    from tau_rl.models import new_policy, with_conditioning
    from tau_rl.stages import demo_mixture, init_policy

    checkpoint = tmp_path / "elsewhere" / "model"  # trained without advantage conditioning
    new_policy("tiny", tiny_config(tmp_path, demos).policy.overrides).save_pretrained(checkpoint)
    config = tiny_config(tmp_path / "run", demos)
    config.policy.checkpoint, config.policy.sft_mode, config.policy.conditioning_dropout = str(checkpoint), "conditioned", 0.25
    config.policy.sft = TrainingSettings(steps=25, batch_size=8, lr=1e-3, warmup_steps=0, checkpoint_every=25)
    layout = RunLayout(tmp_path / "run")
    before = with_conditioning(PiModel.from_pretrained(checkpoint), "conditioned", 0.25)
    mixture = demo_mixture(config, layout, before.config)
    rows = list(range(0, len(mixture), max(1, len(mixture) // 8)))[:8]
    record = init_policy(config, layout)
    after = PiModel.from_pretrained(layout.init.policy / "model")
    # the saved policy acts with "Advantage: positive" (tau_policy reads advantage_conditioning) and was trained
    # with the configured share of prompts left plain
    assert after.config.advantage_conditioning and after.config.advantage_dropout == 0.25
    assert record["train"]["step"] == 25
    assert _positive_line_flow_loss(after, mixture, rows) < 0.8 * _positive_line_flow_loss(before, mixture, rows)

    plain = tiny_config(tmp_path / "plain", demos)  # sft_mode "positive": the line on every prompt
    plain.policy.checkpoint, plain.policy.sft.steps, plain.policy.conditioning_dropout = str(checkpoint), 1, 0.25
    init_policy(plain, RunLayout(tmp_path / "plain"))
    saved = PiModel.from_pretrained(RunLayout(tmp_path / "plain").init.policy / "model").config
    assert saved.advantage_conditioning and saved.advantage_dropout == 0.0


def test_sft_mode_is_validated(tmp_path, demos):
    config = tiny_config(tmp_path / "run", demos)
    config.policy.sft_mode = "sometimes"
    with pytest.raises(ValueError, match="policy.sft_mode"):
        config.validate()


def test_the_control_arm_clones_the_demos_and_the_expert_takeovers(tmp_path, demos):
    import torch
    from tau_models import PiModel

    from tau_rl.stages import control_policy

    config = tiny_config(tmp_path / "run", demos)
    config.iterations, config.collect = 1, CollectConfig(episodes_per_task=4, num_envs=4, intervention_rate=1.0)
    run_recap(config)
    layout = RunLayout(tmp_path / "run")
    rollouts = LeRobotDataset(layout.iteration(1).rollouts)
    taken = int(np.asarray(rollouts.columns["intervention"]).sum())
    own = len(rollouts) - taken
    assert taken > 0 and own > 0  # every episode taken over part-way: the policy's own frames come first
    demo_frames = len(LeRobotDataset(demos))
    record = control_policy(config, layout, 1, layout.init.policy, tmp_path / "control")
    # the demonstrations and the expert's frames, never the policy's own
    assert record["frames"] == demo_frames + taken and record["takeover_frames"] == taken
    demos_only = control_policy(config, layout, 1, layout.init.policy, tmp_path / "demos_only", takeovers=False)
    assert demos_only["frames"] == demo_frames and demos_only["takeover_frames"] == 0
    start = PiModel.from_pretrained(layout.init.policy / "model").state_dict()
    trained = PiModel.from_pretrained(tmp_path / "control" / "model")
    assert trained.config.advantage_conditioning and trained.config.advantage_dropout == 0.0  # plain BC prompts
    assert any(not torch.equal(start[k], v) for k, v in trained.state_dict().items())


def test_demos_positive_labels_every_demo_frame_and_ranks_the_rollouts_alone(tmp_path, demos):
    config = tiny_config(tmp_path / "run", demos)
    config.iterations, config.advantages.demos_positive = 1, True
    run_recap(config)
    folder = RunLayout(tmp_path / "run").iteration(1)
    demo_table = AdvantageTable.load(folder.advantages / "demos_0.parquet").columns
    rollouts = AdvantageTable.load(folder.advantages / "iter_001.parquet").columns
    assert demo_table["positive"].all()
    # without the knob the value model ranks the demos: the tiny run's threshold leaves some of them negative
    ranked = tiny_config(tmp_path / "ranked", demos)
    ranked.iterations = 1
    run_recap(ranked)
    ranked_demos = AdvantageTable.load(RunLayout(tmp_path / "ranked").iteration(1).advantages / "demos_0.parquet")
    assert not ranked_demos.columns["positive"].all()
    # the threshold leaves 30% of the rollouts' own frames positive (interventions are positive on top)
    threshold = json.loads(folder.threshold.read_text())
    assert threshold["num_frames"] == len(rollouts["advantage"])
    above = rollouts["advantage"] > threshold["threshold"]
    assert abs(above.mean() - 0.3) <= 1 / len(above) + 1e-9
    np.testing.assert_array_equal(rollouts["positive"], above | rollouts["intervention"])
