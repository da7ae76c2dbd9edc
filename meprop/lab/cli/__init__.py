"""The ``meprop`` command: ``meprop bench | report | train | converge | info``.

Each subcommand lives in its own module, which provides ``configure(parser)`` (adds
its arguments) and ``run(args) -> int`` (does the work, returns the exit status).
This file only wires them together, so ``meprop --help`` stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

__all__ = ["main", "build_parser"]

#: subcommand -> (module implementing it, one-line help)
SUBCOMMANDS = {
    "bench": ("meprop.lab.cli.bench", "measure dense vs meProp forward/backprop times"),
    "report": ("meprop.lab.cli.report", "build speedup tables, plots and an HTML report from results"),
    "train": ("meprop.lab.cli.train", "train the paper's models (MNIST MLP, POS LSTM) dense or with meProp"),
    "converge": ("meprop.lab.cli.converge", "time to accuracy: dense and meProp trained side by side to a target"),
    "info": ("meprop.lab.cli.info", "print the environment snapshot (versions, CPU, GPU)"),
}


def build_parser() -> argparse.ArgumentParser:
    from meprop import __version__

    parser = argparse.ArgumentParser(prog="meprop", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"meprop {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # subcommand not part of this build
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.configure(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from meprop.lab import require_extra

    require_extra()
    args = build_parser().parse_args(argv)
    try:
        return args._run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``meprop bench --list | head``): stop quietly, as a
        # SIGPIPE-killed tool would. Point stdout at devnull so the interpreter's final
        # flush does not raise again (the recipe of Python's signal module docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # 128 + SIGPIPE, the shell's status for a tool killed by a closed pipe
