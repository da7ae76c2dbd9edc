"""Print the lab's structure: its rooms (top-level modules and packages of meprop/lab), their size,
and which rooms each imports, read from the sources with ``ast`` (nothing is imported).

Usage: python scripts/lab_layout.py [--root CHECKOUT]

A room is a direct child of meprop/lab (``plan/``, ``engine/``, ``workloads.py``, ...). The rooms are
printed lowest first: a room comes after every room it imports, where the imports allow it (a cycle
is named). An import between two rooms that goes against that order, and every cycle, is listed
at the end. ``--root`` reads another checkout (e.g. a ``git worktree`` of an older commit), so a
restructuring can be shown before and after with the same command.
"""

from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(module: str, is_package: bool, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if not node.level:
            base = node.module or ""
        else:
            parts = module.split(".")
            parts = parts[: len(parts) - node.level + (1 if is_package else 0)]
            base = ".".join(parts + ([node.module] if node.module else []))
        return [base] + [f"{base}.{alias.name}" for alias in node.names]
    return []


def _room(module: str) -> str | None:
    """``meprop.lab.plan.cases`` -> ``plan``; None outside the lab."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["meprop", "lab"] else None


def rooms(root: Path) -> tuple[dict[str, dict], dict[str, set[str]]]:
    """({room: {"modules": n, "lines": n}}, {room: rooms it imports})."""
    lab = root / "meprop" / "lab"
    known = {p.stem for p in lab.iterdir() if p.suffix == ".py" and p.stem != "__init__"}
    known |= {p.name for p in lab.iterdir() if (p / "__init__.py").exists()}
    sizes: dict[str, dict] = defaultdict(lambda: {"modules": 0, "lines": 0})
    edges: dict[str, set[str]] = defaultdict(set)
    for path in sorted(lab.rglob("*.py")):
        module = _module_name(root, path)
        here = _room(module) or "__init__"
        text = path.read_text(encoding="utf-8")
        sizes[here]["modules"] += 1
        sizes[here]["lines"] += len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            for target in _imported(module, path.name == "__init__.py", node):
                there = _room(target)
                if there in known and there != here:
                    edges[here].add(there)
    return dict(sizes), dict(edges)


def order(names: list[str], edges: dict[str, set[str]]) -> tuple[list[str], list[list[str]]]:
    """Rooms lowest first (a room after all it imports) and the cycles that prevent it."""
    placed: list[str] = []
    left = sorted(names)
    cycles = []
    while left:
        ready = [r for r in left if not (edges.get(r, set()) - set(placed) - {r})]
        if not ready:  # a cycle: place the room with the fewest unplaced imports, name the cycle
            ready = [min(left, key=lambda r: len(edges.get(r, set()) - set(placed)))]
            cycles.append([ready[0], *sorted(edges.get(ready[0], set()) - set(placed))])
        placed += ready
        left = [r for r in left if r not in ready]
    return placed, cycles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    sizes, edges = rooms(args.root)
    placed, cycles = order(list(sizes), edges)
    print(f"{'room':<16} {'modules':>7} {'lines':>6}  imports")
    for room in reversed(placed):  # the top floor first, as a building is drawn
        print(f"{room:<16} {sizes[room]['modules']:>7} {sizes[room]['lines']:>6}  "
              f"{', '.join(sorted(edges.get(room, ()))) or '-'}")
    upward = [f"{a} -> {b}" for i, a in enumerate(placed) for b in sorted(edges.get(a, ()))
              if b in placed and placed.index(b) > i]
    print(f"\n{len(placed)} rooms, {sum(len(v) for v in edges.values())} imports between rooms, "
          f"{len(upward)} against the order{': ' + '; '.join(upward) if upward else ''}, "
          f"{len(cycles)} cycles{': ' + '; '.join(' <-> '.join(c) for c in cycles) if cycles else ''}")


if __name__ == "__main__":
    main()
