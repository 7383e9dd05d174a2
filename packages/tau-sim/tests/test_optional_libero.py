"""LIBERO is the optional extra tau-sim[libero]: tau-sim imports it only when a LIBERO env first resets, and without
it tau_sim still imports and runs its tabletop tasks while a LIBERO task fails with one line naming the extra."""

import os
import subprocess
import sys

LIBERO_ROOTS = ("libero", "robosuite", "mujoco")
# Run first in the child: every import of a LIBERO module fails as if the extra were not installed.
BLOCK_LIBERO = f"""
import importlib.abc, sys
class BlockLibero(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {LIBERO_ROOTS!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, BlockLibero())
"""
WITHOUT_LIBERO = BLOCK_LIBERO + """
import tau_sim
(demo,) = tau_sim.generate_demos(tau_sim.suite_tasks("tabletop")[:1], 1, env_kwargs={"image_size": 16})
print("tabletop demo frames", len(demo.actions))
env = tau_sim.make_env("libero_object/0")  # building the env object needs no LIBERO module
for name, call in [("reset", lambda: env.reset(seed=0)),
                   ("demos", lambda: next(tau_sim.generate_demos(["libero_object/0"], 1)))]:
    try:
        call()
    except tau_sim.LiberoMissingError as error:
        print(name, len(str(error).splitlines()), error)
"""


def run_python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_tau_sim_and_libero_env_construction_import_no_libero_module():
    code = ("import sys, tau_sim; tau_sim.make_env('libero_object/0'); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {LIBERO_ROOTS!r}))")
    assert run_python(code) == "[]\n"


def test_without_libero_tabletop_runs_and_libero_is_a_one_line_error_naming_the_extra():
    lines = run_python(WITHOUT_LIBERO).splitlines()
    assert lines[0].startswith("tabletop demo frames ") and int(lines[0].split()[-1]) > 0
    assert [line.split()[0] for line in lines[1:]] == ["reset", "demos"]
    for line in lines[1:]:
        _, line_count, message = line.split(" ", 2)
        assert line_count == "1", line
        assert "pip install tau-sim[libero]" in message and message.endswith("not importable: libero, robosuite, mujoco")
