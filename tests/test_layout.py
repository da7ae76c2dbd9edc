"""The package's structure, checked from the source with ``ast``; nothing is imported.

- the library (``meprop`` minus ``meprop.lab``) imports nothing of the lab, and nothing
  outside the standard library but torch;
- the lab (``meprop.lab``) and the front doors (benchmarks/, tests/benchmarks/) use the
  library's public modules only, never ``meprop._impl`` or a private module of a package;
- inside the lab, modules import only downwards along the floors of :data:`FLOORS`
  (bottom modules, results/, plan/, ops/, engine/, paper/, converge/, report/, cli/), and no
  lab folder holds more than 12 modules directly;
- no workload-name comparison outside ``meprop.lab.workloads``, no measurement-name comparison
  outside ``meprop.lab.measurements``;
- no import cycle among meprop's modules;
- no private name (``_name``) is imported from another module;
- the schema string ``"meprop.results/1"`` is written once;
- the code (meprop/, tests/, benchmarks/, scripts/) speaks of the product: no issue numbers, no
  reference to a file outside the repository;
- no module is longer than 400 lines, no function longer than 80.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "meprop"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
LAB = "meprop.lab"
#: what the library may import besides the standard library and itself
LIBRARY_DEPENDENCIES = ("torch",)
#: imported when installed, never required (the ninja wheel's binary speeds up kernel builds)
LIBRARY_OPTIONAL = ("ninja",)
#: the lab's floors, lowest first, in the direction data flows: a module imports only from its
#: own floor or a lower one (the library and the standard library sit below them all)
FLOORS = (
    ("meprop.lab", "meprop.lab.workloads", "meprop.lab.measurements", "meprop.lab.stopwatch"),
    ("meprop.lab.results",),
    ("meprop.lab.plan",),
    ("meprop.lab.ops",),
    ("meprop.lab.engine",),
    ("meprop.lab.paper",),
    ("meprop.lab.converge",),
    ("meprop.lab.report",),
    ("meprop.lab.cli",),
)
#: the most modules one lab folder holds directly
MAX_MODULES_PER_FOLDER = 12


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
            # ``from meprop.lab.report import figures``: the submodule is the dependency
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
    for name in ("meprop.lab.results.schema", "meprop.lab.results.store", "meprop.lab.results.env",
                 "meprop.lab.plan.cases", "meprop.lab.plan.profiles", "meprop.lab.plan.targets",
                 "meprop.lab.ops.build", "meprop.lab.engine.timer", "meprop.lab.engine.runner", "meprop.lab.cli.bench",
                 "meprop.lab.paper.data", "meprop.lab.ops.models", "meprop.lab.paper.train", "meprop.lab.paper.presets",
                 "meprop.lab.cli.train", "meprop.lab.report.ingest", "meprop.lab.report.frames",
                 "meprop.lab.report.sections.bench", "meprop.lab.report.sections.targets",
                 "meprop.lab.report.sections.paper", "meprop.lab.report.sections.accuracy", "meprop.lab.report.tables",
                 "meprop.lab.report.figures", "meprop.lab.report.html", "meprop.lab.report.build", "meprop.lab.cli.report"):
        assert name in MODULES, f"{name} is missing"


#: ``python -m meprop`` is the lab's command line, reached through the library's package
ENTRY_POINTS = ("meprop.__main__",)


def _library_modules() -> list[str]:
    return [m for m in MODULES if not _in(m, LAB) and m not in ENTRY_POINTS]


def test_the_library_imports_none_of_the_lab():
    bad = [f"{module}:{line} imports {target}" for module in _library_modules()
           for target, _, line in _imports(module) if _in(target, LAB)]
    assert not bad, "the library must not import the lab:\n" + "\n".join(bad)


def test_the_library_depends_on_torch_only():
    allowed = set(sys.stdlib_module_names) | {"meprop", *LIBRARY_DEPENDENCIES, *LIBRARY_OPTIONAL}
    bad = [f"{module}:{line} imports {target}" for module in _library_modules()
           for target, _, line in _imports(module) if target and target.split(".")[0] not in allowed]
    assert not bad, "the library's dependencies are torch only:\n" + "\n".join(bad)


def _is_private_module(target: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in target.split("."))


def _front_door_files() -> list[Path]:
    return sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "tests" / "benchmarks").glob("*.py"))


def test_the_lab_and_front_doors_use_the_public_api():
    bad = [f"{module}:{line} imports {target}" for module in MODULES if _in(module, LAB)
           for target, _, line in _imports(module)
           if target.startswith("meprop") and not _in(target, LAB) and _is_private_module(target)]
    for path in _front_door_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                       else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            bad += [f"{path.relative_to(ROOT)}:{node.lineno} imports {t}" for t in targets
                    if t.startswith("meprop") and _is_private_module(t)]
    assert not bad, "private library modules used outside the library:\n" + "\n".join(bad)


def test_the_code_speaks_of_the_product():
    pattern = re.compile(r"\b[Ii]ssues? ?#?\d+|(?<![\w/])DESIGN\.md")
    code = [path for folder in (PACKAGE, ROOT / "tests", ROOT / "benchmarks", ROOT / "scripts")
            for suffix in ("*.py", "*.cpp", "*.h", "*.sh") for path in sorted(folder.rglob(suffix))]
    bad = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in code
           for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not bad, "issue numbers or files outside the repository named in the code:\n" + "\n".join(bad)


#: the one module that may compare workload names: the registry
WORKLOAD_REGISTRY = "meprop.lab.workloads"


def _workload_names() -> set[str]:
    tree = MODULES[WORKLOAD_REGISTRY][1]
    return {node.value for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef)
            for stmt in cls.body if isinstance(stmt, ast.Assign)
            and any(isinstance(t, ast.Tuple) and isinstance(t.elts[0], ast.Name) and t.elts[0].id == "name"
                    for t in stmt.targets)
            for node in [stmt.value.elts[0]] if isinstance(node, ast.Constant)}


def _compared_strings(node: ast.Compare) -> set[str]:
    found = set()
    for part in [node.left, *node.comparators]:
        elements = part.elts if isinstance(part, (ast.Tuple, ast.List, ast.Set)) else [part]
        found |= {e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return found


def _name_comparisons(names: set[str], registry: str) -> list[str]:
    """Every comparison with one of ``names`` outside ``registry``, in meprop and the front doors."""
    trees = [(name, tree) for name, (_, tree) in MODULES.items() if name != registry]
    trees += [(str(p.relative_to(ROOT)), ast.parse(p.read_text(encoding="utf-8"))) for p in _front_door_files()]
    return [f"{where}:{node.lineno} compares {sorted(_compared_strings(node) & names)}"
            for where, tree in trees for node in ast.walk(tree)
            if isinstance(node, ast.Compare) and _compared_strings(node) & names]


def test_no_workload_name_comparisons_outside_the_registry():
    names = _workload_names()
    assert {"linear", "mlp", "lstm", "transformer", "model"} <= names
    bad = _name_comparisons(names, WORKLOAD_REGISTRY)
    assert not bad, "ask meprop.lab.workloads instead of comparing workload names:\n" + "\n".join(bad)


#: the one module that may compare measurement names: the registry
MEASUREMENT_REGISTRY = "meprop.lab.measurements"


def _measurement_names() -> set[str]:
    tree = MODULES[MEASUREMENT_REGISTRY][1]
    return {call.args[0].value for call in ast.walk(tree)
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "MeasurementKind"
            and call.args and isinstance(call.args[0], ast.Constant)}


def test_no_measurement_name_comparisons_outside_the_registry():
    names = _measurement_names()
    assert {"forward", "linear_backward", "overall_backward", "train_step", "ddp_step"} <= names
    bad = _name_comparisons(names, MEASUREMENT_REGISTRY)
    assert not bad, "ask meprop.lab.measurements instead of comparing measurement names:\n" + "\n".join(bad)


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


def _floor(module: str) -> int | None:
    """The index of ``module``'s floor in :data:`FLOORS` (None: not in the lab)."""
    best = None
    for index, members in enumerate(FLOORS):
        for member in members:
            if _in(module, member) and (best is None or len(member) > len(best[1])):
                best = (index, member)
    return None if best is None else best[0]


def test_every_lab_module_has_a_floor():
    homeless = [m for m in MODULES if _in(m, LAB) and _floor(m) is None]
    assert not homeless


def test_layers_import_only_downwards():
    bad = []
    for module in MODULES:
        here = _floor(module)
        if here is None:
            continue
        for target, _, line in _imports(module):
            there = _floor(target)
            if there is not None and there > here:
                bad.append(f"{module}:{line} imports {target} (floor {there} above {here})")
    assert not bad, "layering broken (a lower floor imports a higher one):\n" + "\n".join(bad)


def test_no_lab_folder_holds_more_than_twelve_modules():
    folders: dict[Path, int] = {}
    for name, (path, _) in MODULES.items():
        if _in(name, LAB) and path.name != "__init__.py":
            folders[path.parent] = folders.get(path.parent, 0) + 1
    crowded = {str(f.relative_to(ROOT)): n for f, n in folders.items() if n > MAX_MODULES_PER_FOLDER}
    assert not crowded, crowded


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def test_no_private_name_imported_from_another_module():
    bad = []
    for module in MODULES:
        for target, names, line in _imports(module):
            if target.startswith("meprop") and target != module:
                bad += [f"{module}:{line} imports {target}.{n}" for n in names if _private(n)]
    for path in _front_door_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                bad += [f"{path.relative_to(ROOT)}:{node.lineno} imports {a.name}"
                        for a in node.names if _private(a.name)]
    assert not bad, "\n".join(bad)


def test_schema_string_written_once():
    where = [name for name, (_, tree) in MODULES.items() for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and "meprop.results/1" in node.value
             and not _is_docstring(tree, node)]
    assert where == ["meprop.lab.results.schema"], where


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
    assert defined == {"load_results": ["meprop.lab.report.ingest"], "ResultsError": ["meprop.lab.results.store"]}


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
