"""The package's layers: core library below, policy (targets, tasks) in the middle, the app on top.

Imports may only point downward or sideways within a layer, and no group of modules may import each
other in a circle. Every import statement counts, also those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "edgecompress"

CORE = {"errors", "helpers", "artifacts", "progress", "stats", "graph", "prune", "quant", "export", "eval", "models", "data",
        "train", "profile", "engine"}
POLICY = {"targets", "tasks"}
APP = {"", "__main__", "settings", "outcomes", "run", "run_folder", "stages", "pipeline", "quantize_job", "report", "comparison", "cli"}
LAYER = {**dict.fromkeys(CORE, 0), **dict.fromkeys(POLICY, 1), **dict.fromkeys(APP, 2)}
LAYER_NAMES = ("core", "policy", "app")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the edgecompress modules it imports (a name imported from a package counts as its submodule if one exists)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                source = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
                for alias in node.names:
                    if f"{source}.{alias.name}" in modules:
                        found.add(f"{source}.{alias.name}")
                    elif source in modules:
                        found.add(source)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name in modules}
        graph[name] = found - {name}
    return graph


def unit(module: str) -> str:
    """The package part a module belongs to: ``edgecompress.prune.plan`` -> ``prune``; the root package is ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, stack.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return stack[stack.index(child):] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        state[node], _ = 2, stack.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_every_module_has_a_layer():
    assert {unit(module) for module in import_graph()} - set(LAYER) == set()


def test_imports_point_only_downward():
    upward = [f"{module} ({LAYER_NAMES[LAYER[unit(module)]]}) imports {target} ({LAYER_NAMES[LAYER[unit(target)]]})"
              for module, targets in import_graph().items() for target in targets if LAYER[unit(target)] > LAYER[unit(module)]]
    assert upward == []


def test_no_import_circle_between_packages():
    units: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        units.setdefault(unit(module), set()).update(unit(target) for target in targets if unit(target) != unit(module))
    assert find_cycle(units) is None


def test_no_import_circle_between_modules():
    assert find_cycle(import_graph()) is None


def test_the_checker_sees_a_circle_and_an_upward_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    assert "edgecompress.stages" in graph["edgecompress.pipeline"]  # function-level and module-level imports both count
    assert "edgecompress.targets.registry" in graph["edgecompress.targets"]
