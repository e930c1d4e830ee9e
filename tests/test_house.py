"""The house: distil's own imports form no cycle and point down the floors only, and the front doors stay light
(no scikit-learn or transformers on `import distil` or `distil --help`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "distil"

# docs/architecture.md: floor 0 is the contracts and the schema, 1 the engine and its parts, 2 what trains and
# what reports, 3 the pipelines, 4 the doors. A module not named here is on floor 1; a prefix covers a package.
FLOORS = {
    0: ("distil.contracts", "distil.errors", "distil.recipe", "distil.plugins", "distil.extras",
        "distil.explain.config", "distil.text.config", "distil.tabular.config"),
    1: ("distil.explain.soft_tree", "distil.explain.students"),  # models that live beside the explain stage
    2: ("distil.context", "distil.strategies", "distil.compress", "distil.explain", "distil.report",
        "distil.report_table", "distil.report_html", "distil.report_settings", "distil.card", "distil.text.lm_report",
        "distil.tabular.transparent"),
    3: ("distil.pipeline", "distil.text.lm_run", "distil.tabular.run", "distil.seeds"),
    4: ("distil.cli", "distil.serve", "distil.sweep", "distil.starter", "distil.__main__"),
}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the distil modules it imports anywhere (function bodies included; `if TYPE_CHECKING:` left out).

    A module's own parent packages are not its dependencies (Python runs them first whatever it imports)."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        deps = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                found = resolve(target) if target.split(".")[0] == "distil" else None
                if found and found != name and not name.startswith(found + "."):
                    deps.add(found)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def floor(module: str) -> int:
    """The floor of a module: its most specific entry in FLOORS, else 1; the package root is above every floor."""
    if module == "distil":
        return 5
    best, length = 1, 0
    for level, prefixes in FLOORS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = level, len(prefix)
    return best


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_distil_has_no_import_cycles() -> None:
    graph = import_graph()
    assert "distil.engine" in graph and "distil.recipe" in graph["distil.engine"]  # the walk sees imports
    assert cycles(graph) == []


def test_imports_point_down_the_floors() -> None:
    upward = [f"{m} (floor {floor(m)}) -> {d} (floor {floor(d)})"
              for m, deps in sorted(import_graph().items()) for d in sorted(deps) if floor(d) > floor(m)]
    assert upward == []


def test_the_recipe_schema_imports_no_methods_or_strategies() -> None:
    deps = import_graph()["distil.recipe"]
    assert not any(d.startswith(("distil.methods", "distil.strategies", "distil.text.datasets")) for d in deps)


def loaded_after(code: str) -> set[str]:
    """The heavy optional modules present in sys.modules after running `code` in a fresh interpreter."""
    heavy = ("sklearn", "transformers", "matplotlib", "onnx", "fastapi", "optuna", "mlflow", "wandb")
    probe = f"{code}\nimport sys\nprint('LOADED:' + ','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("LOADED:"))
    return {m for m in line.removeprefix("LOADED:").split(",") if m}


@pytest.mark.parametrize("code", [
    "import distil",
    "import distil.cli",
    "import sys\nfrom distil.cli import main\nsys.argv = ['distil', '--help']\ntry:\n    main()\n"
    "except SystemExit:\n    pass",
])
def test_the_front_doors_load_no_heavy_dependency(code: str) -> None:
    assert loaded_after(code) == set()


def test_the_probe_sees_a_heavy_import() -> None:
    assert loaded_after("import distil.metrics\nimport sklearn.metrics") == {"sklearn"}


def test_the_registries_find_the_text_plugins_without_the_core_importing_them() -> None:
    code = ("import sys\nimport distil\nassert 'distil.text.datasets' not in sys.modules\n"
            "from distil.data import available_datasets\nfrom distil.methods import method_class\n"
            "assert 'rotten_tomatoes' in available_datasets()\n"
            "method_class('uld')\nassert 'distil.text.lm_losses' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
