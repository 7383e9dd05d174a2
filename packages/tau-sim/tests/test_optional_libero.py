"""LIBERO is an optional extra: tau-sim imports it only when a LIBERO env first resets, and says how to install it."""

import os
import subprocess
import sys

import pytest

from tau_sim import make_env

LIBERO_MODULES = ("libero", "libero.libero", "robosuite", "mujoco")


def test_tau_sim_and_libero_env_construction_import_no_libero_module():
    code = ("import sys, tau_sim; tau_sim.make_env('libero_object/0'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('libero', 'robosuite', 'mujoco')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout == "[]\n"


def test_missing_libero_is_a_one_line_error_naming_the_extra(monkeypatch):
    for name in LIBERO_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it raises ImportError
    env = make_env("libero_object/0")
    with pytest.raises(ImportError, match=r"pip install tau-sim\[libero\]") as error:
        env.reset(seed=0)
    assert "\n" not in str(error.value)
