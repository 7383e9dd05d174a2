"""Where the monorepo's packages and apps live, and the import directions allowed between them."""

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("tau_data", "tau_models", "tau_train", "tau_sim", "tau_policy", "tau_rl")
APPS = ("train_app", "eval_app", "rl_app", "data_app", "serve_app")
_BELOW_RL = frozenset({"tau_data", "tau_models", "tau_train", "tau_sim", "tau_policy"})

# Which first-party modules each package may import (besides itself). Only apps/rl may import tau-rl.
ALLOWED: dict[str, frozenset[str]] = {
    "tau_models": frozenset(),
    "tau_data": frozenset({"tau_models"}),  # the standard sample's definition and the one image resize
    "tau_train": frozenset(),
    "tau_sim": frozenset(),
    "tau_policy": frozenset({"tau_models", "tau_data"}),
    "tau_rl": _BELOW_RL,
    "train_app": _BELOW_RL,
    "eval_app": _BELOW_RL,
    "data_app": _BELOW_RL,
    "serve_app": _BELOW_RL,
    "rl_app": frozenset(PACKAGES),
}


@dataclass(frozen=True)
class Violation:
    """One import that breaks the allowed directions."""

    file: Path
    line: int
    importer: str
    imported: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.importer} must not import {self.imported}"


def repo_root() -> Path:
    """The directory holding packages/ and apps/ (the build root, also inside a Pants sandbox)."""
    for candidate in (Path.cwd(), *Path(__file__).resolve().parents):
        if (candidate / "packages").is_dir() and (candidate / "apps").is_dir():
            return candidate
    raise FileNotFoundError(f"no directory with packages/ and apps/ above {Path.cwd()} or {__file__}")


def source_dirs(root: Path) -> dict[str, Path]:
    """Map each first-party top-level module name to its source directory."""
    found = {p.name: p for p in sorted(root.glob("packages/*/src/*")) if p.is_dir()}
    found.update({p.name: p for p in sorted(root.glob("apps/*/src/*")) if p.is_dir()})
    return {name: path for name, path in found.items() if name in ALLOWED}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Top-level module names imported by a Python file (absolute imports only), with line numbers."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def import_violations(root: Path) -> list[Violation]:
    """Every first-party import in packages/ and apps/ that the allowed directions forbid."""
    first_party = set(ALLOWED)
    violations = []
    for importer, directory in source_dirs(root).items():
        for file in sorted(directory.rglob("*.py")):
            for line, module in imported_modules(file):
                if module in first_party and module != importer and module not in ALLOWED[importer]:
                    violations.append(Violation(file.relative_to(root), line, importer, module))
    return violations
