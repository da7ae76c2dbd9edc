"""``meprop info``: print the environment snapshot that every benchmark run records.

The fields are those of the ``env`` record (docs/results_schema.md), collected by
:func:`meprop.lab.results.env.snapshot`.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["configure", "run", "format_snapshot"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the snapshot as JSON")


def format_snapshot(env: dict) -> str:
    """``name: value`` lines; GPUs one per line."""
    width = max(len(name) for name in env)
    lines = []
    for name, value in env.items():
        if name == "gpus":
            if not value:
                lines.append(f"{name:<{width}}  none")
            for i, gpu in enumerate(value):
                memory = gpu.get("memory_bytes")
                size = f"{memory / 2**30:.1f} GiB" if memory else "?"
                lines.append(f"{name if i == 0 else '':<{width}}  {gpu.get('name')}, {size}, "
                             f"driver {gpu.get('driver')}")
        elif name == "ram_bytes" and value:
            lines.append(f"{name:<{width}}  {value} ({value / 2**30:.1f} GiB)")
        elif name == "argv":
            continue
        else:
            lines.append(f"{name:<{width}}  {value}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from meprop.lab.ops.build import ALLOCATION_POLICY
    from meprop.lab.results.env import snapshot

    env = snapshot(allocator=ALLOCATION_POLICY)
    print(json.dumps(env, indent=2) if args.json else format_snapshot(env))
    return 0
