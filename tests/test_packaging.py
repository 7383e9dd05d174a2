"""Each package's pyproject.toml agrees with its Pants distribution and declares what its code imports."""

import re
import sys
import tomllib
from pathlib import Path

import pytest
from repo_layout import PACKAGES, imported_modules, repo_root

# Import name -> distribution name, where they differ.
DISTRIBUTION_OF = {
    "yaml": "pyyaml",
    "PIL": "pillow",
    "google": "protobuf",
    "huggingface_hub": "huggingface-hub",
}
# Imported only inside try/except ImportError for optional features (kept out of the wheels' requirements).
OPTIONAL = {"wandb", "libero", "robosuite", "mujoco", "torchcodec", "lerobot", "sentencepiece"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    return normalise(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0])


def package_dir(module: str) -> Path:
    return repo_root() / "packages" / module.replace("_", "-")


@pytest.mark.parametrize("module", PACKAGES)
def test_pyproject_matches_pants_distribution(module: str) -> None:
    project = tomllib.loads((package_dir(module) / "pyproject.toml").read_text())["project"]
    build = (package_dir(module) / "BUILD").read_text()
    assert project["name"] == module.replace("_", "-")
    assert f'name="{project["name"]}"' in build
    assert f'version="{project["version"]}"' in build
    assert f'description="{project["description"]}"' in build


@pytest.mark.parametrize("module", PACKAGES)
def test_imports_are_declared(module: str) -> None:
    root = repo_root()
    project = tomllib.loads((package_dir(module) / "pyproject.toml").read_text())["project"]
    declared = {requirement_name(d) for d in project["dependencies"]}
    locked = {requirement_name(line) for line in (root / "third_party/requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    stdlib = set(sys.stdlib_module_names)
    missing = set()
    for file in (package_dir(module) / "src").rglob("*.py"):
        for _, name in imported_modules(file):
            if name in stdlib or name == module or name in OPTIONAL:
                continue
            dist = normalise(DISTRIBUTION_OF.get(name, name))
            if dist not in declared:
                missing.add(f"{name} ({file.relative_to(root)})")
    assert not missing, f"{module}: imported but not in pyproject.toml dependencies: {sorted(missing)}"
    third_party = {d for d in declared if not d.startswith("tau-")}
    assert third_party <= locked, f"{module}: not in third_party/requirements.txt: {third_party - locked}"
