"""The shape of the package: its layers contract holds and bites, no import cycles, small
modules."""

from __future__ import annotations

import ast
import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_MODULE_LINES = 500


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    """The project's contract (pyproject.toml) checked against the `cub` under
    ``package_parent``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(REPO / "pyproject.toml")],
        cwd=package_parent,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(package_parent)},
        capture_output=True,
        text=True,
        check=False,
    )


@contextlib.contextmanager
def appended(path: Path, code: str) -> Iterator[None]:
    """``code`` at the end of ``path`` for the duration."""
    original = path.read_text()
    path.write_text(original + code)
    try:
        yield
    finally:
        path.write_text(original)


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    parent = tmp_path_factory.mktemp("tree")
    shutil.copytree(REPO / "cub", parent / "cub", ignore=shutil.ignore_patterns("__pycache__"))
    return parent


def test_the_layers_contract_holds_and_fails_on_an_upward_import(package_copy: Path) -> None:
    clean = lint_imports(package_copy)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "Contracts: 2 kept, 0 broken." in clean.stdout

    # A lower layer (records) importing a higher one (the CLI), as a quick fix might.
    durable = package_copy / "cub" / "records" / "durable.py"
    with appended(durable, "\n\ndef _late() -> None:\n    from cub.cli import output\n"):
        broken = lint_imports(package_copy)
    assert broken.returncode != 0
    assert "cub.records is not allowed to import cub.cli" in broken.stdout
    assert "cub.records.durable -> cub.cli.output" in broken.stdout


def test_one_mode_importing_another_breaks_the_contract(package_copy: Path) -> None:
    merge = package_copy / "cub" / "modes" / "parallel" / "merge.py"
    with appended(merge, "\n\nfrom cub.modes.sandbox import workspace  # noqa\n"):
        broken = lint_imports(package_copy)
    assert broken.returncode != 0
    assert "cub.modes.parallel is not allowed to import cub.modes.sandbox" in broken.stdout


def import_cycles(graph: grimp.ImportGraph) -> list[set[str]]:
    """Each set of modules that import one another, directly or not (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def cycles_in(package_parent: Path) -> list[set[str]]:
    """The import cycles of the `cub` under ``package_parent``, found in a process of its own
    (in this one `cub` is imported already, from the checkout)."""
    script = (
        "import json, grimp\n"
        "from tests.architecture.test_imports import import_cycles\n"
        "graph = grimp.build_graph('cub', exclude_type_checking_imports=True, cache_dir=None)\n"
        "print(json.dumps([sorted(c) for c in import_cycles(graph)]))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", script],
        cwd=package_parent,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{package_parent}:{REPO}"},
        capture_output=True,
        text=True,
        check=True,
    )
    return [set(cycle) for cycle in json.loads(found.stdout)]


def test_no_import_cycles_in_cub() -> None:
    """Counting the imports inside functions, not those made for type checking only."""
    assert cycles_in(REPO) == []


def test_the_cycle_finder_finds_a_cycle(package_copy: Path) -> None:
    errors = package_copy / "cub" / "errors.py"
    with appended(errors, "\n\ndef _late() -> None:\n    from cub.workspace import git\n"):
        cycles = cycles_in(package_copy)
    assert any({"cub.errors", "cub.workspace.git"} <= cycle for cycle in cycles)


def test_no_module_is_over_500_lines() -> None:
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text(encoding="utf-8").splitlines())
        for path in (REPO / "cub").rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def lazy_imports_without_a_reason(path: Path, root: Path = REPO) -> list[str]:
    """The function-level imports of ``path`` (not those for type checking) whose function
    says nothing about why: a comment on the line, or on the line just above, of the
    function's first such import."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        imports = [
            node
            for node in ast.walk(function)
            if isinstance(node, ast.Import | ast.ImportFrom) and node.lineno > function.lineno
        ]
        if not imports:
            continue
        first = min(node.lineno for node in imports)
        said = "#" in lines[first - 1] or lines[first - 2].strip().startswith("#")
        if not said:
            found.append(f"{path.relative_to(root)}:{first} in {function.name}()")
    return found


def test_every_lazy_import_says_why() -> None:
    missing = [
        where
        for path in sorted((REPO / "cub").rglob("*.py"))
        for where in lazy_imports_without_a_reason(path)
    ]
    assert missing == []


def test_an_unexplained_lazy_import_is_found(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text("def f() -> None:\n    import json\n\n    json.dumps(1)\n")
    assert lazy_imports_without_a_reason(module, tmp_path) == ["probe.py:2 in f()"]
    module.write_text("def f() -> None:\n    import json  # slow\n\n    json.dumps(1)\n")
    assert lazy_imports_without_a_reason(module, tmp_path) == []
