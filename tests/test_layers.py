"""Import directions between the parts of the code, read from the source (ast), not from a run.

`ALLOWED_IMPORTS` is the layer table of docs/DESIGN.md (a test below holds the two equal): each part
of `vit_finetune` (a sub-package or a top-level module), the repository's `benchmarks/` package and
`scripts/`, and the parts each may import. Imports inside functions count too.
"""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "vit_finetune"
BENCHMARKS = "benchmarks"  # beside scripts/, not installed: nothing in the package may import it

# may be imported by every part; import nothing above them
NEUTRAL = {"typed", "yaml_config", "precision", "run_files", "multi_label", "finetune_config", "scores"}
ALLOWED_IMPORTS = {
    "typed": set(),
    "yaml_config": {"typed"},
    "run_files": {"typed", "yaml_config"},
    "multi_label": set(),
    "finetune_config": {"typed"},
    "scores": set(),
    "precision": {"typed"},
    "modeling": NEUTRAL,
    "data": NEUTRAL,
    "config": NEUTRAL | {"data", "modeling"},
    "loading": NEUTRAL | {"config", "data", "modeling"},
    "prediction": NEUTRAL | {"data", "modeling", "loading"},
    "evaluation": NEUTRAL | {"config", "data", "modeling", "loading"},
    "training": NEUTRAL | {"config", "data", "modeling"},
    "commands": NEUTRAL | {"config", "data", "modeling", "loading", "prediction", "evaluation", "training"},
    "cli": {"commands"},
    "__init__": set(),  # vit_finetune/__init__.py
    BENCHMARKS: NEUTRAL | {"config", "data", "modeling", "loading", "prediction", "evaluation", "training",
                           "commands"},
    "scripts": {"commands", BENCHMARKS},  # scripts/*.py: thin wrappers of the commands and of the benchmark
}


def design_doc_table() -> dict[str, set[str]]:
    """The table of docs/DESIGN.md's "Layers" section: each row's parts -> the parts they may import."""
    section = (REPO / "docs" / "DESIGN.md").read_text().split("## Layers", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            parts_cell, imports_cell = line.strip("|").split("|")[:2]
            imports = {name.rstrip("/") for name in re.findall(r"`([^`]+)`", imports_cell)}
            table |= {name.rstrip("/"): imports for name in re.findall(r"`([^`]+)`", parts_cell)}
    return table


def part_of(module: str) -> str:
    """`vit_finetune.training.run` -> `training`; `vit_finetune` itself -> `__init__`; `benchmarks.*` -> `benchmarks`."""
    parts = module.split(".")
    if parts[0] == BENCHMARKS:
        return BENCHMARKS
    return parts[1] if len(parts) > 1 else "__init__"


def is_ours(module: str) -> bool:
    """A module of the package or of the benchmarks (third-party and standard-library imports are not checked)."""
    return any(module == top or module.startswith(top + ".") for top in (PACKAGE, BENCHMARKS))


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
    """Every Python file of the package and of the benchmarks with its part, and the scripts."""
    files = [(path, part_of(module_name(path))) for top in (PACKAGE, BENCHMARKS)
             for path in sorted((REPO / top).rglob("*.py"))]
    return files + [(path, "scripts") for path in sorted((REPO / "scripts").glob("*.py"))]


@pytest.mark.parametrize("path, part", sources(), ids=[str(path.relative_to(REPO)) for path, _ in sources()])
def test_imports_follow_the_layers(path, part):
    assert part in ALLOWED_IMPORTS, f"{path.relative_to(REPO)}: part {part!r} is missing from ALLOWED_IMPORTS"
    for module, line in imported_modules(path):
        if module == PACKAGE or not is_ours(module):
            continue
        target = part_of(module)
        if target == part:
            continue
        assert target in ALLOWED_IMPORTS[part], (
            f"{path.relative_to(REPO)}:{line} imports {module}, but {part} may import only "
            f"{sorted(ALLOWED_IMPORTS[part]) or 'nothing else in the package'} (layers in docs/DESIGN.md)")


def test_design_doc_shows_the_same_layers():
    assert design_doc_table() == ALLOWED_IMPORTS, "docs/DESIGN.md's layer table differs from ALLOWED_IMPORTS"


def test_the_checker_sees_a_forbidden_import(tmp_path, monkeypatch):
    """Guard for the test above: a relative import from inference into training is resolved and caught."""
    fake = tmp_path / PACKAGE / "loading.py"
    fake.parent.mkdir()
    fake.write_text("def f():\n    from .training import run\n")
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    assert imported_modules(fake) == [(f"{PACKAGE}.training.run", 2)]
    with pytest.raises(AssertionError, match="loading.py:2 imports vit_finetune.training.run"):
        test_imports_follow_the_layers(fake, "loading")


def test_the_checker_sees_the_package_import_the_benchmarks(tmp_path, monkeypatch):
    """Guard: the installed package importing the non-installed benchmarks is caught."""
    fake = tmp_path / PACKAGE / "commands" / "bench.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from benchmarks.suite import run_benchmark\n")
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    with pytest.raises(AssertionError, match="bench.py:1 imports benchmarks.suite.run_benchmark"):
        test_imports_follow_the_layers(fake, "commands")
