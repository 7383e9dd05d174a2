import json

import numpy as np
import pytest

from tau_rl.advantage_table import COLUMNS, AdvantageTable
from tau_rl.config import RecapConfig
from tau_rl.layout import INIT_STAGES, ITERATION_STAGES, RunLayout, write_json_atomic


def test_iteration_folders_and_markers(tmp_path):
    layout = RunLayout(tmp_path)
    folder = layout.iteration(3)
    assert folder.root == tmp_path / "iter_003" and folder.stages == ITERATION_STAGES
    assert layout.init.stages == INIT_STAGES
    assert folder.first_incomplete() == "collect"
    folder.mark_done("collect", {"episodes": 4})
    assert folder.record("collect")["episodes"] == 4
    assert folder.first_incomplete() == "value" and not folder.is_complete()
    with pytest.raises(RuntimeError, match="before"):
        folder.mark_done("policy")
    with pytest.raises(ValueError, match="unknown stage"):
        folder.marker("train")
    with pytest.raises(FileNotFoundError, match="not complete"):
        folder.record("value")
    with pytest.raises(ValueError, match="numbered from 1"):
        layout.iteration(0)


def test_atomic_json_leaves_no_temporary(tmp_path):
    write_json_atomic(tmp_path / "a" / "x.json", {"b": 1})
    write_json_atomic(tmp_path / "a" / "x.json", {"b": 2})
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == {"b": 2}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]


def test_advantage_table_round_trip_and_errors(tmp_path):
    columns = {c: np.arange(5, dtype=np.float64) for c in COLUMNS}
    columns["positive"] = np.array([True, False, True, False, False])
    table = AdvantageTable(source="/data/ds", columns=columns, threshold=0.25)
    table.save(tmp_path / "t.parquet")
    loaded = AdvantageTable.load(tmp_path / "t.parquet")
    assert loaded.threshold == 0.25 and loaded.source == "/data/ds" and len(loaded) == 5
    np.testing.assert_array_equal(loaded.columns["positive"], columns["positive"])
    with pytest.raises(ValueError, match="differ in length"):
        AdvantageTable(source="x", columns={**columns, "value": np.zeros(3)}, threshold=0.0)
    with pytest.raises(FileNotFoundError):
        AdvantageTable.load(tmp_path / "missing.parquet")


def test_config_validation_names_the_fields():
    with pytest.raises(ValueError) as info:
        RecapConfig(demos=[], iterations=0).validate()
    assert "demos is empty" in str(info.value) and "iterations" in str(info.value)
    config = RecapConfig(demos=["d"])
    config.policy.mode = "positive"
    config.policy.guidance_weight = 2.0
    config.advantages.positive_fraction = 1.5
    with pytest.raises(ValueError) as info:
        config.validate()
    assert "guidance_weight" in str(info.value) and "positive_fraction" in str(info.value)


def test_config_loads_from_yaml_and_dotted_overrides(tmp_path):
    from tau_train import load_config

    path = tmp_path / "recap.yaml"
    path.write_text("iterations: 3\ndemos: [/data/demos]\npolicy:\n  preset: tiny\n  guidance_weight: 2.0\n")
    config = load_config(path, ["collect.intervention_rate=0.1", "returns.failure_penalty=500",
                                "policy.overrides.chunk_size=10"], schema=RecapConfig)
    assert isinstance(config, RecapConfig)
    assert config.iterations == 3 and config.demos == ["/data/demos"] and config.policy.guidance_weight == 2.0
    assert config.collect.intervention_rate == 0.1 and config.returns.normaliser == 600.0
    assert config.policy.overrides == {"chunk_size": 10}
    config.validate()
