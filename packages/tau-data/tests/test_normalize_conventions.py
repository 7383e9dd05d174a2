"""Normalizer conventions: each library's own eps handling (LeRobot, OpenTau config_version 1, openpi), exact
inverses, degenerate statistics, zero std refused where it would divide by eps, and (de)serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tau_data import DatasetError, NormMode, Normalizer

STATS = {"h": {"x": {"mean": np.array([1.0, 2.0, 0.0]), "std": np.array([0.5, 2.0, 1e-9]),
                     "min": np.array([0.0, -1.0, 3.0]), "max": np.array([2.0, 1.0, 3.0]),
                     "q01": np.array([0.1, -0.9, 3.0]), "q99": np.array([1.9, 0.8, 3.0])}}}
X = np.array([[0.4, 0.3, 3.2], [1.7, -2.0, 2.9]], dtype=np.float32)


def make(mode: NormMode, convention: str, eps: float) -> Normalizer:
    return Normalizer(stats=STATS, modes={"x": mode}, convention=convention, eps=eps)


@pytest.mark.parametrize("mode", [NormMode.MIN_MAX, NormMode.QUANTILES])
def test_range_formulas(mode):
    s = STATS["h"]["x"]
    lo, hi = (s["min"], s["max"]) if mode == NormMode.MIN_MAX else (s["q01"], s["q99"])
    r = hi - lo
    expected = {
        "lerobot": 2 * (X - lo) / np.where(r == 0, 1e-8, r) - 1,
        "openpi": (X - lo) / (r + 1e-6) * 2 - 1,
        "opentau": (X - lo + 0.5 * (np.where(np.abs(r) < 1e-6, 1, r) - r)) / (np.where(np.abs(r) < 1e-6, 1, r) + 1e-6)
        * 2 - 1,
    }
    for convention, eps in (("lerobot", 1e-8), ("openpi", 1e-6), ("opentau", 1e-6)):
        norm = make(mode, convention, eps)
        y = norm.normalize(X, "h", "x")
        np.testing.assert_allclose(y[:, :2], expected[convention][:, :2], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(norm.unnormalize(y, "h", "x"), X, rtol=0, atol=1e-5)
        yt = norm.normalize(torch.from_numpy(X), "h", "x")
        np.testing.assert_allclose(yt.numpy(), y, rtol=0, atol=1e-6)
    # the degenerate dim (lo == hi == 3): LeRobot divides by eps, OpenTau widens it to 1 around 3, openpi by eps
    assert abs(make(mode, "opentau", 1e-6).normalize(X, "h", "x")[0, 2] - (3.2 - 3 + 0.5) / (1 + 1e-6) * 2 + 1) < 1e-5
    assert make(mode, "lerobot", 1e-8).normalize(X, "h", "x")[0, 2] > 1e6


def test_a_value_at_the_low_quantile_is_exactly_minus_one():
    """Computed in the values' precision as LeRobot does, so state bins at the edges agree."""
    lo = np.float32(STATS["h"]["x"]["q01"][0])
    x = np.array([lo, 0.0, 3.0], dtype=np.float32)
    assert make(NormMode.QUANTILES, "lerobot", 1e-8).normalize(x, "h", "x")[0] == -1.0


def test_mean_std_and_zero_std():
    opentau = make(NormMode.MEAN_STD, "opentau", 1e-6)  # std 1e-9 < eps: std := 1
    np.testing.assert_allclose(opentau.normalize(X, "h", "x")[:, 2], (X[:, 2] - 0.0) / (1 + 1e-6), rtol=1e-6)
    np.testing.assert_allclose(make(NormMode.MEAN_STD, "openpi", 1e-6).normalize(X, "h", "x")[:, 0],
                               (X[:, 0] - 1.0) / (0.5 + 1e-6), rtol=1e-6)
    zero = {"h": {"x": {**STATS["h"]["x"], "std": np.array([0.5, 0.0, 1.0])}}}
    with pytest.raises(DatasetError, match=r"zero std in dims \[1\].*file='stats.json', field='x.std'"):
        Normalizer(stats=zero, modes={"x": "MEAN_STD"}, convention="openpi", eps=1e-6, source="stats.json")
    Normalizer(stats=zero, modes={"x": "MEAN_STD"}, convention="opentau", eps=1e-6)  # OpenTau guards it
    with pytest.raises(DatasetError, match="convention 'keras' is not one of"):
        Normalizer(stats=STATS, modes={"x": "MEAN_STD"}, convention="keras")


@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
def test_convention_and_eps_are_saved(tmp_path, suffix):
    norm = make(NormMode.QUANTILES, "openpi", 1e-6)
    loaded = Normalizer.load(norm.save(tmp_path / f"n{suffix}"))
    assert (loaded.convention, loaded.eps, loaded.source) == ("openpi", 1e-6, str(tmp_path / f"n{suffix}"))
    np.testing.assert_array_equal(loaded.normalize(X, "h", "x"), norm.normalize(X, "h", "x"))


def test_files_without_a_convention_load_as_lerobot(tmp_path):
    data = make(NormMode.QUANTILES, "lerobot", 1e-8).to_dict()
    del data["convention"], data["eps"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert (Normalizer.load(tmp_path / "old.json").convention, Normalizer.load(tmp_path / "old.json").eps) == \
        ("lerobot", 1e-8)
