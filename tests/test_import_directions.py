"""The dependency arrows between packages and apps: a wrong import fails the suite."""

import shutil
from pathlib import Path

from repo_layout import PACKAGES, import_violations, repo_root, source_dirs


def test_every_package_has_sources() -> None:
    assert set(PACKAGES) <= set(source_dirs(repo_root()))


def test_no_forbidden_imports() -> None:
    violations = import_violations(repo_root())
    assert not violations, "forbidden imports:\n" + "\n".join(map(str, violations))


def test_checker_catches_a_wrong_arrow(tmp_path: Path) -> None:
    root = repo_root()
    for top in ("packages", "apps"):
        shutil.copytree(root / top, tmp_path / top)
    bad = tmp_path / "packages/tau-models/src/tau_models/_wrong_arrow.py"
    bad.write_text("import os\nfrom tau_data import something\n")
    app_import = tmp_path / "packages/tau-rl/src/tau_rl/_wrong_arrow.py"
    app_import.write_text("import train_app.cli\n")
    rl_from_app = tmp_path / "apps/eval/src/eval_app/_wrong_arrow.py"
    rl_from_app.write_text("from tau_rl.models import PolicyBundle\n")
    policy_to_sim = tmp_path / "packages/tau-policy/src/tau_policy/_wrong_arrow.py"
    policy_to_sim.write_text("\n\nimport tau_sim\n")
    found = {(v.importer, v.imported, v.line) for v in import_violations(tmp_path)}
    assert found == {("tau_models", "tau_data", 2), ("tau_rl", "train_app", 1), ("eval_app", "tau_rl", 1),
                     ("tau_policy", "tau_sim", 3)}
