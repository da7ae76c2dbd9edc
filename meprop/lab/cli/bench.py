"""``meprop bench``: measure dense vs meProp and append the results to ``OUT/results.jsonl``.

Which cases:

- ``--profile NAME`` (smoke, quick, standard, paper, full, optimizers, perf; default quick) picks a
  named grid (:mod:`meprop.lab.plan.profiles`); an unknown name is refused in one line listing them.
- ``--hidden``, ``--k-ratio``, ``--k``, ``--batch``, ``--mode``, ``--measurement``,
  ``--workload`` without ``--profile`` build a custom grid (their Cartesian product;
  defaults: linear, linear_backward, hidden 1024, k ratio 10%, batch 64, unified).
  With ``--profile`` they *filter* that profile's cases.
- ``--device``, ``--threads`` and ``--dtype`` *replace* those fields in every case (run
  the quick profile on cuda, or single-threaded); ``--world-size`` gives each ``ddp_step``
  case one case per number of processes (default 2; ``--threads``: per process, default 1).

Results are never lost: an existing results file is only added to with ``--resume``,
which skips the cases already recorded and appends the rest as a new run.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

from meprop.checks import check_threads
from meprop.lab.measurements import measurement

__all__ = ["configure", "run", "select_cases", "check_threads", "MAX_BUDGET_S", "MAX_MIN_SAMPLES"]

_DEFAULT_PROFILE = "quick"


#: Upper bounds of the timing options (a case is a matter of seconds, not hours).
MAX_BUDGET_S = 3600.0
MAX_MIN_SAMPLES = 10_000


def _list_of(kind: type, name: str):
    def parse(text: str):
        values = []
        for part in text.replace(",", " ").split():
            try:
                values.append(kind(part))
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{name}: {part!r} is not a{'n int' if kind is int else ' number'}"
                ) from None
        if not values:
            raise argparse.ArgumentTypeError(f"{name}: empty list")
        return values
    return parse


class _Extend(argparse.Action):
    """Collect comma- or space-separated values over repeated options into one flat list."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("nargs", "+")
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        current = list(getattr(namespace, self.dest) or [])
        for chunk in values:
            current.extend(chunk)
        setattr(namespace, self.dest, current)


def configure(parser: argparse.ArgumentParser) -> None:
    from meprop.lab.engine.allocator import DEFAULTS, FAIR, POLICIES
    from meprop.lab.plan.cases import DTYPES, MEASUREMENTS, WORKLOADS
    from meprop.lab.plan.profiles import PROFILES
    from meprop.selection import MODES

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (__doc__.split("\n\n", 1)[1]).replace("``", "")
    lists = "(comma- or space-separated; several values allowed)"
    # not argparse's choices: an unknown name is refused in one line (no usage block), in _check_args
    parser.add_argument("--profile", default=None, metavar="NAME",
                        help=f"named grid: {', '.join(PROFILES)} (default {_DEFAULT_PROFILE} "
                             f"unless a custom grid is given)")
    parser.add_argument("--device", type=_list_of(str, "--device"), action=_Extend,
                        help=f"cpu, cuda, cuda:N {lists}")
    parser.add_argument("--hidden", type=_list_of(int, "--hidden"), action=_Extend,
                        help=f"hidden sizes n {lists}")
    parser.add_argument("--k-ratio", type=_list_of(float, "--k-ratio"), action=_Extend,
                        help=f"k / n, in (0, 1] {lists}")
    parser.add_argument("--k", type=_list_of(int, "--k"), action=_Extend,
                        help=f"absolute k {lists}")
    parser.add_argument("--batch", type=_list_of(int, "--batch"), action=_Extend,
                        help=f"batch sizes {lists}")
    parser.add_argument("--mode", type=_list_of(str, "--mode"), action=_Extend,
                        help=f"{', '.join(MODES)} {lists}")
    parser.add_argument("--measurement", type=_list_of(str, "--measurement"), action=_Extend,
                        help=f"{', '.join(MEASUREMENTS)} {lists}")
    parser.add_argument("--workload", type=_list_of(str, "--workload"), action=_Extend,
                        help=f"{', '.join(WORKLOADS)} {lists}")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="replace every case's dtype")
    parser.add_argument("--model", default=None, metavar="MODULE:FACTORY",
                        help="your own model: factory() returns (model, inputs); --k / --k-ratio / "
                             "--mode apply through convert() (k against the widest linear layer); "
                             "default measurements: train_step and overall_backward")
    parser.add_argument("--optimizer", type=_list_of(str, "--optimizer"), action=_Extend,
                        help=f"the meProp side of train_step cases: lazy (meprop.optim.Adam(lazy=True), "
                             f"default), exact (lazy=False) {lists}")
    parser.add_argument("--adam", type=_list_of(str, "--adam"), action=_Extend,
                        help=f"torch's Adam on both sides of train_step cases: default (the "
                             f"constructor's defaults), fused (fused=True: the fastest torch Adam, "
                             f"the strongest dense baseline) {lists}")
    parser.add_argument("--world-size", type=_list_of(int, "--world-size"), action=_Extend,
                        help=f"processes of each ddp_step case (gloo on 127.0.0.1, started by the "
                             f"suite; default 2) {lists}")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for every case (default: the profile's, else torch's)")
    parser.add_argument("--out", default=None,
                        help="output folder (default results/<profile>); results go to OUT/results.jsonl")
    parser.add_argument("--resume", action="store_true",
                        help="add to an existing results file, skipping cases already recorded")
    parser.add_argument("--budget", type=float, default=None,
                        help="per-case timing budget in seconds (default: the profile's)")
    parser.add_argument("--min-samples", type=int, default=None,
                        help="samples per side at least (default: the profile's)")
    parser.add_argument("--malloc", choices=POLICIES, default=FAIR,
                        help=f"allocator setting for dense and meProp alike: {FAIR} (default: freed "
                             f"blocks stay in the heap, so fresh large tensors are not page-faulted "
                             f"on every call: the fair dense baseline) or {DEFAULTS} (glibc as it comes)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probe")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--targets", default=None, metavar="FILE",
                        help="targets file whose cases the perf profile runs (docs/targets.md; "
                             "default benchmarks/targets.toml in the current directory)")
    parser.add_argument("--list", action="store_true", help="print the cases and exit")


def _check_args(args: argparse.Namespace) -> None:
    """Refuse bad option values with a message naming the option."""
    from meprop.checks import check_choice, check_k, check_k_ratio
    from meprop.lab.plan.cases import ADAM_IMPLS, DTYPES, MEASUREMENTS, OPTIMIZER_MODES, WORKLOADS, check_device
    from meprop.lab.plan.profiles import PROFILES
    from meprop.selection import MODES

    if args.profile is not None:
        check_choice(args.profile, "--profile", PROFILES)
    for value in args.mode or ():
        check_choice(value, "--mode", MODES)
    for value in args.measurement or ():
        check_choice(value, "--measurement", MEASUREMENTS)
    for value in args.workload or ():
        check_choice(value, "--workload", WORKLOADS)
    for value in args.optimizer or ():
        check_choice(value, "--optimizer", OPTIMIZER_MODES)
    for value in args.adam or ():
        check_choice(value, "--adam", ADAM_IMPLS)
    for value in args.device or ():
        check_device(value, "--device")
    for name in ("hidden", "batch"):
        for value in getattr(args, name) or ():
            if value <= 0:
                raise ValueError(f"--{name} must be positive integers, got {value}")
    for value in args.k or ():
        check_k(value, "--k")
    for value in getattr(args, "world_size", None) or ():
        if value < 2:
            raise ValueError(f"--world-size must be integers >= 2 (ddp_step runs that many "
                             f"processes), got {value}")
    for value in args.k_ratio or ():
        check_k_ratio(value, "--k-ratio")
    check_threads(args.threads, "--threads")
    if args.budget is not None and not 0 < args.budget <= MAX_BUDGET_S:  # refuses inf and nan
        raise ValueError(f"--budget must be a number of seconds in (0, {MAX_BUDGET_S:g}] "
                         f"(per case), got {args.budget}")
    if args.min_samples is not None and not 1 <= args.min_samples <= MAX_MIN_SAMPLES:
        raise ValueError(f"--min-samples must be an int from 1 to {MAX_MIN_SAMPLES}, "
                         f"got {args.min_samples}")
    if args.dtype is not None:
        check_choice(args.dtype, "--dtype", DTYPES)


_AXES = ("hidden", "k_ratio", "k", "batch", "mode", "measurement", "workload")


def select_cases(args: argparse.Namespace):
    """The cases and the profile object (None for a custom grid) the arguments ask for."""
    from meprop.lab.plan.cases import grid
    from meprop.lab.plan.profiles import PROFILES

    _check_args(args)
    if getattr(args, "model", None) is not None:
        return _replace_fields(_model_cases(args), args), None
    if args.profile is None and any(getattr(args, a) for a in _AXES):
        profile = None
        cases = grid(
            workload=args.workload or ("linear",),
            measurement=args.measurement or ("linear_backward",),
            hidden=args.hidden or (1024,), k_ratio=args.k_ratio, k=args.k,
            batch=args.batch or (64,), mode=args.mode or ("unified",),
            world_size=getattr(args, "world_size", None) or (2,),
        )
    else:
        profile = PROFILES[args.profile or _DEFAULT_PROFILE]
        targets = None
        if getattr(args, "targets", None) is not None:
            from meprop.lab.plan.target_file import load_targets

            targets = load_targets(args.targets)
        cases = [c for c in profile.cases(targets) if _matches(c, args)]
        if not cases:
            raise ValueError(
                f"no case of profile {profile.name!r} matches the given filters "
                f"({', '.join(f'--{a.replace(chr(95), chr(45))}' for a in _AXES if getattr(args, a))})"
            )
    return _replace_fields(cases, args), profile


def _model_cases(args: argparse.Namespace) -> list:
    """The cases of ``--model module:factory``: its widest linear layer is the case's hidden."""
    from meprop.lab.plan.cases import grid
    from meprop.lab.ops.user_model import widest_linear

    if args.profile is not None or args.workload or args.hidden:
        raise ValueError("--model measures your model: it takes no --profile, --workload or --hidden")
    return grid(workload=("model",), measurement=args.measurement or ("train_step", "overall_backward"),
                hidden=(widest_linear(args.model),), k_ratio=args.k_ratio, k=args.k,
                batch=(1,), mode=args.mode or ("per_example",), model=args.model)


def _replace_fields(cases, args: argparse.Namespace) -> list:
    """``--device`` (one case per device), ``--threads`` and ``--dtype`` replace those fields;
    ``--optimizer`` and ``--adam`` give each training-step case one case per value."""
    replaced = []
    seen = set()
    for case in cases:
        step = measurement(case.measurement).steps_optimizer
        optimizers = (args.optimizer or (case.optimizer,)) if step else (case.optimizer,)
        adams = (args.adam or (case.adam,)) if step else (case.adam,)
        ddp = case.world_size > 1
        if ddp:
            optimizers = args.optimizer or (case.optimizer,)
        worlds = (getattr(args, "world_size", None) or (case.world_size,)) if ddp else (1,)
        for device, optimizer, adam, world in itertools.product(
                args.device or (case.device,), optimizers, adams, worlds):
            changes = {"device": device, "optimizer": optimizer, "adam": adam, "world_size": world}
            if args.threads is not None:
                changes["threads"] = args.threads
            if args.dtype is not None:
                changes["dtype"] = args.dtype
            new = case.replace(**changes)
            if new.key not in seen:
                seen.add(new.key)
                replaced.append(new)
    return replaced


def _matches(case, args) -> bool:
    from meprop.checks import resolve_k

    checks = [
        (args.hidden, case.hidden), (args.batch, case.batch), (args.mode, case.mode),
        (args.measurement, case.measurement), (args.workload, case.workload),
    ]
    if any(values and value not in values for values, value in checks):
        return False
    if args.k or args.k_ratio:
        ks = set(args.k or ()) | {resolve_k(None, r, case.out_features) for r in args.k_ratio or ()}
        return case.k in ks
    return True


def run(args: argparse.Namespace) -> int:
    from meprop.lab.results.store import ResultsLockedError, ResultsWriteError

    try:
        return _run(args)
    except (ValueError, TypeError, FileExistsError, ResultsLockedError) as error:
        print(f"meprop bench: error: {error}", file=sys.stderr)
        return 2
    except ResultsWriteError as error:  # disk full, I/O error: what was written stays
        print(f"meprop bench: error: {error}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from meprop.lab.engine.runner import run_cases
    from meprop.lab.plan.timing import TimingOptions
    from meprop.lab.results.store import RESULTS_FILENAME, ResultsWriter, new_run_id

    cases, profile = select_cases(args)
    profile_name = profile.name if profile is not None else "custom"
    if args.list:
        for case in cases:
            print(case.key)
        print(f"{len(cases)} case(s)", file=sys.stderr)
        return 0
    base = profile.timing if profile is not None else TimingOptions(extend_factor=2.0)
    options = base.replace(budget_s=args.budget, min_samples=args.min_samples,
                           max_samples=max(args.min_samples or 0, base.max_samples))
    out = Path(args.out if args.out is not None else f"results/{profile_name}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder, got the file {str(out)!r}")
    writer = ResultsWriter(out / RESULTS_FILENAME, resume=args.resume)
    if any(c.device.startswith("cuda") for c in cases):
        import torch

        if not torch.cuda.is_available():
            print(f"meprop bench: warning: --device cuda requested but cuda is not available "
                  f"(torch {torch.__version__}); those cases are recorded as skipped",
                  file=sys.stderr)
    from meprop.lab.engine.allocator import apply as apply_allocator

    malloc = apply_allocator(args.malloc)
    started = time.perf_counter()
    run_id = new_run_id()
    with writer:
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*cuda is not available.*")
            summary = run_cases(
                cases, writer, run_id, options=options, profile=profile_name,
                argv=list(sys.argv), malloc=malloc,
                progress=not args.no_progress, measure_memory=not args.no_memory,
            )
    elapsed = time.perf_counter() - started
    print(f"{len(cases)} case(s) of profile {profile_name}: {summary.ok} measured, "
          f"{summary.skipped} skipped, {summary.already_done} already done; "
          f"{elapsed:.1f} s; results: {writer.path}")
    for reason, count in summary.reasons.items():
        print(f"  skipped {count}: {reason}")
    return 0
