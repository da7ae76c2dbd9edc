"""The package's structure (issue 13), checked from the source with ``ast``; nothing is imported.

- no import cycle among meprop's modules;
- the core (functional, selection, nn, lstm, optim, kernels, _checks, stopwatch and the
  private helpers of nn/optim) imports
  nothing from results/, bench/, paper/ or report/; results/ nothing from bench/, paper/,
  report/; paper/ nothing from bench/; bench/ nothing from report/;
- no private name (``_name``) is imported from another module;
- the schema string ``"meprop.results/1"`` is written once;
- no module is longer than 400 lines, no function longer than 80.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "meprop"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
CORE = ("meprop.functional", "meprop.selection", "meprop.nn", "meprop.lstm", "meprop.optim",
        "meprop.kernels", "meprop._checks", "meprop.stopwatch", "meprop._grad_layout", "meprop._layer_probe",
        "meprop._sparse_grad_ops", "meprop._masked_backward")
#: layer -> the layers it must not import
FORBIDDEN = {
    **{core: ("meprop.results", "meprop.bench", "meprop.paper", "meprop.report") for core in CORE},
    "meprop.results": ("meprop.bench", "meprop.paper", "meprop.report"),
    "meprop.paper": ("meprop.bench", "meprop.report"),
    "meprop.bench": ("meprop.report",),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(p): (p, ast.parse(p.read_text(encoding="utf-8"), filename=str(p)))
            for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    is_package = MODULES[module][0].name == "__init__.py"
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in ``module``, lazy ones too."""
    out = []
    for node in ast.walk(MODULES[module][1]):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            names = [alias.name for alias in node.names]
            # ``from meprop.report import figures``: the submodule is the dependency
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            out += [(s, [], node.lineno) for s in subs]
            if len(subs) < len(names):
                out.append((target, [n for n in names if f"{target}.{n}" not in MODULES], node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module in MODULES:
        graph[module] = {target for target, _, _ in _imports(module)
                         if target in MODULES and target != module}
    return graph


def _in(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def test_the_layout_exists():
    for name in ("meprop.results.schema", "meprop.results.store", "meprop.results.env",
                 "meprop.bench.cases", "meprop.bench.profiles", "meprop.bench.targets",
                 "meprop.bench.workloads", "meprop.bench.timer", "meprop.bench.runner", "meprop.bench.cli",
                 "meprop.paper.data", "meprop.paper.models", "meprop.paper.train", "meprop.paper.presets",
                 "meprop.paper.cli", "meprop.report.ingest", "meprop.report.frames",
                 "meprop.report.sections.bench", "meprop.report.sections.targets",
                 "meprop.report.sections.paper", "meprop.report.sections.accuracy", "meprop.report.tables",
                 "meprop.report.figures", "meprop.report.html", "meprop.report.build", "meprop.report.cli"):
        assert name in MODULES, f"{name} is missing"


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_layers_import_only_downwards():
    bad = []
    for module in MODULES:
        for layer, forbidden in FORBIDDEN.items():
            if not _in(module, layer):
                continue
            for target, _, line in _imports(module):
                if any(_in(target, f) for f in forbidden):
                    bad.append(f"{module}:{line} imports {target}")
    assert not bad, "layering broken:\n" + "\n".join(bad)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def test_no_private_name_imported_from_another_module():
    bad = []
    for module in MODULES:
        for target, names, line in _imports(module):
            if target.startswith("meprop") and target != module:
                bad += [f"{module}:{line} imports {target}.{n}" for n in names if _private(n)]
    for path in sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "tests" / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                bad += [f"{path.relative_to(ROOT)}:{node.lineno} imports {a.name}"
                        for a in node.names if _private(a.name)]
    assert not bad, "\n".join(bad)


def test_schema_string_written_once():
    where = [name for name, (_, tree) in MODULES.items() for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and "meprop.results/1" in node.value
             and not _is_docstring(tree, node)]
    assert where == ["meprop.results.schema"], where


def _is_docstring(tree: ast.Module, constant: ast.Constant) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and body[0].value is constant:
                return True
    return False


def test_one_load_results_and_one_results_error():
    defined = {}
    for name, (_, tree) in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in (
                    "load_results", "ResultsError", "ResultsFormatError"):
                defined.setdefault(node.name, []).append(name)
    assert defined == {"load_results": ["meprop.report.ingest"], "ResultsError": ["meprop.results.store"]}


def test_module_and_function_sizes():
    too_long = []
    for name, (path, tree) in MODULES.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"module {name}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"function {name}.{node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)
