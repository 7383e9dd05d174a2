"""The cached Python 3.11 venv with the real openpi client (openpi-client==0.1.2) that the serving tests drive.

openpi-client pins numpy<2, so it cannot share tau's environment, and it imports typing_extensions without
declaring it. The venv lives in $TAU_OPENPI_CLIENT_VENV (default ~/.cache/tau/openpi-client-venv) and is rebuilt
when its stamp (the requirements and the Python version) changes. `.ci/run` builds it before the tests
(`python3.11 packages/tau-policy/tests/openpi_client_venv.py`, via .ci/openpi-client-venv); the tests build it
themselves when it is missing, and fail if that is impossible.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = ("openpi-client==0.1.2", "typing_extensions")


def venv_dir() -> Path:
    """$TAU_OPENPI_CLIENT_VENV, else ~/.cache/tau/openpi-client-venv."""
    configured = os.environ.get("TAU_OPENPI_CLIENT_VENV")
    return Path(configured) if configured else Path.home() / ".cache" / "tau" / "openpi-client-venv"


def clean_env() -> dict[str, str]:
    """This environment without tau's Python path (the venv has its own numpy) and without the
    PIP_CONFIG_FILE=/dev/null that Pants sets for its own pip: the venv's pip uses the machine's pip configuration
    (index, certificate bundle)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "PEX")) and not (k == "PIP_CONFIG_FILE" and v == os.devnull)}


def _stamp(python: str) -> str:
    version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], check=True,
                             capture_output=True, text=True, env=clean_env()).stdout.strip()
    return f"python {version}; {' '.join(REQUIREMENTS)}\n"


def openpi_client_python(python: str | None = None) -> Path:
    """The venv's interpreter, building the venv first when it is missing or stale (one builder at a time)."""
    base = python or sys.executable
    venv = venv_dir()
    venv.parent.mkdir(parents=True, exist_ok=True)
    stamp = _stamp(base)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp_file = venv / ".tau-stamp"
        if not (stamp_file.is_file() and stamp_file.read_text() == stamp):
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([base, "-m", "venv", str(venv)], check=True, env=clean_env())
            result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *REQUIREMENTS],
                                    capture_output=True, text=True, env=clean_env())
            if result.returncode != 0:
                raise RuntimeError(f"could not install {' '.join(REQUIREMENTS)} into {venv}:\n{result.stderr}")
            stamp_file.write_text(stamp)
    return venv / "bin" / "python"


if __name__ == "__main__":
    print(openpi_client_python(sys.argv[1] if len(sys.argv) > 1 else None))
