"""Import directions between the parts of the package, read from the source (ast), not from a run.

The table is the layer picture of docs/DESIGN.md: each part of `vit_finetune` (a sub-package or a
top-level module) and the parts it may import. Imports inside functions count too.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "vit_finetune"

NEUTRAL = {"typed", "precision", "run_files", "scores"}  # may be imported by every part; import nothing above them
ALLOWED_IMPORTS = {
    "typed": set(),
    "run_files": set(),
    "scores": set(),
    "precision": {"typed"},
    "modeling": NEUTRAL,
    "data": NEUTRAL,
    "config": NEUTRAL | {"data", "modeling"},
    "loading": NEUTRAL | {"config", "data", "modeling"},
    "prediction": NEUTRAL | {"data", "modeling", "loading"},
    "evaluation": NEUTRAL | {"config", "data", "modeling", "loading"},
    "training": NEUTRAL | {"config", "data", "modeling"},
    "bench": NEUTRAL | {"config", "data", "modeling", "loading", "prediction", "evaluation", "training"},
    "commands": NEUTRAL | {"config", "data", "modeling", "loading", "prediction", "evaluation", "training",
                           "bench"},
    "cli": {"commands"},
    "scripts": {"commands"},  # scripts/*.py, outside the package: thin wrappers of the commands
    "__init__": set(),  # vit_finetune/__init__.py
}


def part_of(module: str) -> str:
    """`vit_finetune.training.run` -> `training`; `vit_finetune` itself -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in `path`; `from package import name` counts as `package.name`."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def sources() -> list[tuple[Path, str]]:
    """Every Python file of the package with its part, and the scripts."""
    files = [(path, part_of(module_name(path))) for path in sorted((REPO / PACKAGE).rglob("*.py"))]
    return files + [(path, "scripts") for path in sorted((REPO / "scripts").glob("*.py"))]


@pytest.mark.parametrize("path, part", sources(), ids=[str(path.relative_to(REPO)) for path, _ in sources()])
def test_imports_follow_the_layers(path, part):
    assert part in ALLOWED_IMPORTS, f"{path.relative_to(REPO)}: part {part!r} is missing from ALLOWED_IMPORTS"
    for module, line in imported_modules(path):
        if module != PACKAGE and not module.startswith(PACKAGE + "."):
            continue
        target = part_of(module)
        if target == part:
            continue
        assert target in ALLOWED_IMPORTS[part], (
            f"{path.relative_to(REPO)}:{line} imports {module}, but {part} may import only "
            f"{sorted(ALLOWED_IMPORTS[part]) or 'nothing else in the package'} (layers in docs/DESIGN.md)")


def test_the_checker_sees_a_forbidden_import(tmp_path, monkeypatch):
    """Guard for the test above: a relative import from inference into training is resolved and caught."""
    fake = tmp_path / PACKAGE / "loading.py"
    fake.parent.mkdir()
    fake.write_text("def f():\n    from .training import run\n")
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    assert imported_modules(fake) == [(f"{PACKAGE}.training.run", 2)]
    with pytest.raises(AssertionError, match="loading.py:2 imports vit_finetune.training.run"):
        test_imports_follow_the_layers(fake, "loading")
