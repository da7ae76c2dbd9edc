"""``python -m meprop.kernels build|status``: build the compiled kernels (``make setup`` runs it) or show their state."""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meprop.kernels", description=__doc__)
    parser.add_argument("command", choices=("build", "status"))
    parser.add_argument("--quiet", action="store_true", help="no compiler output")
    args = parser.parse_args(argv)
    from meprop import settings
    from meprop.settings import SettingError

    try:
        settings.check()  # every MEPROP_* switch, whatever the command
        return _run(args)
    except SettingError as error:  # a bad MEPROP_* variable: one line, no traceback
        print(f"meprop kernels: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from meprop import kernels
    from meprop.kernels import _build

    if args.command == "build":
        start = time.perf_counter()
        try:
            path = _build.library_path()
            if path.exists():
                print(f"meprop kernels: up to date ({path})")
                return 0
            path = _build.build(verbose=not args.quiet)
        except Exception as error:  # noqa: BLE001 - report, and let make decide
            print(f"meprop kernels: build FAILED ({type(error).__name__}: {error}); meprop will use "
                  f"the PyTorch path", file=sys.stderr)
            return 1
        print(f"meprop kernels: built in {time.perf_counter() - start:.1f} s ({path})")
        return 0
    if not kernels.available():
        print(f"meprop kernels: unavailable ({kernels.unavailable_reason()})")
        return 1
    print(f"meprop kernels: loaded from {kernels.library_path()}; float32 top-k threshold: "
          f"{kernels.threshold_search()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
