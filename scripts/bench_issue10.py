"""Run issue 10's target cases of the ``perf`` profile (the compiled-kernel rows) into one results file.

    .venv/bin/python scripts/bench_issue10.py results/issue10     # then: meprop report results/issue10

Same engine, timer, settings and allocator policy as ``meprop bench --profile perf`` (interleaved,
median + IQR; ``--malloc`` default: freed blocks stay in the heap for dense and meProp alike), only
the rows whose target notes say "issue 10".
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from meprop.bench.allocator import FAIR
from meprop.bench.allocator import apply as apply_allocator
from meprop.bench.profiles import PROFILES
from meprop.results.store import ResultsWriter
from meprop.bench.runner import TimingOptions, run_cases
from meprop.bench.targets import TARGETS


def main(out: str) -> int:
    malloc = apply_allocator(FAIR)
    profile = PROFILES["perf"]
    cases = [c for t in TARGETS if t.note.startswith("issue 10") for c in t.cases()]
    options = TimingOptions(budget_s=profile.budget_s, warmup_s=profile.warmup_s,
                            min_samples=profile.min_samples, max_samples=profile.max_samples)
    Path(out).mkdir(parents=True, exist_ok=True)
    writer = ResultsWriter(Path(out) / "results.jsonl", resume=False)
    run_cases(cases, writer, uuid.uuid4().hex[:12], options=options, profile="perf", argv=sys.argv,
              progress=False, measure_memory=False, malloc=malloc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "results/issue10"))
