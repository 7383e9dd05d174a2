#!/usr/bin/env bash
# Install the tau-models wheel alone into a fresh Python 3.11 venv and import it: the package teams use on its
# own must need no other tau package. Then install every wheel together and import each package.
set -euo pipefail
unset PYTHONPATH  # the venvs below must see only what the wheels install
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="$(command -v python3.11 || ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11.*/bin/python3.11 | sort -rV | head -n1)"
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
quiet() { grep -v 'is ignored: it is neither a file nor a directory' || true; }

"${py}" -m venv "${tmp}/alone"
"${tmp}/alone/bin/pip" install -q dist/tau_models-*.whl "torch==2.13.0" 2>&1 | quiet
"${tmp}/alone/bin/python" - <<'PY'
import importlib.util, tau_models
others = [m for m in ("tau_data", "tau_train", "tau_sim", "tau_policy", "tau_rl") if importlib.util.find_spec(m)]
assert not others, f"the tau-models wheel pulled in {others}"
print(f"tau-models {tau_models.__version__} imports alone")
PY
"${tmp}/alone/bin/pip" install -q dist/tau_*.whl "torch==2.13.0" 2>&1 | quiet
"${tmp}/alone/bin/python" -c "import tau_data, tau_models, tau_train, tau_sim, tau_policy, tau_rl; print('all six wheels import together')"
# LIBERO is tau-sim's optional extra: the wheels above did not install it, tau_sim imported without it, and the
# wheel declares the extra as pyproject.toml does.
"${tmp}/alone/bin/python" - <<'PY'
import importlib.metadata, importlib.util, re, tomllib
assert not [m for m in ("libero", "robosuite", "mujoco") if importlib.util.find_spec(m)], "LIBERO came with the wheels"
spec = lambda requirement: re.sub(r"[ ()]", "", requirement.split(";")[0])
extra = [spec(r) for r in importlib.metadata.requires("tau-sim") if "extra == 'libero'" in r]
with open("packages/tau-sim/pyproject.toml", "rb") as f:
    expected = tomllib.load(f)["project"]["optional-dependencies"]["libero"]
assert extra == expected, f"the tau-sim wheel's libero extra is {extra}, pyproject.toml says {expected}"
print("tau-sim imports without LIBERO; tau-sim[libero] installs", ", ".join(extra))
PY
