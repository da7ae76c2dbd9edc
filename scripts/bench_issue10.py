"""Run issue 10's target cases of the ``perf`` profile (the compiled-kernel rows) into one results file.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 \\
        .venv/bin/python scripts/bench_issue10.py results/issue10     # then: meprop report results/issue10

Same engine, timer and settings as ``meprop bench --profile perf`` (interleaved, median + IQR),
only the rows whose target notes say "issue 10".
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from meprop.bench.cases import PROFILES
from meprop.bench.results import ResultsWriter
from meprop.bench.runner import TimingOptions, run_cases
from meprop.bench.targets import TARGETS


def main(out: str) -> int:
    profile = PROFILES["perf"]
    cases = [c for t in TARGETS if t.note.startswith("issue 10") for c in t.cases()]
    options = TimingOptions(budget_s=profile.budget_s, warmup_s=profile.warmup_s,
                            min_samples=profile.min_samples, max_samples=profile.max_samples)
    Path(out).mkdir(parents=True, exist_ok=True)
    writer = ResultsWriter(Path(out) / "results.jsonl", resume=False)
    run_cases(cases, writer, uuid.uuid4().hex[:12], options=options, profile="perf", argv=sys.argv,
              progress=False, measure_memory=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "results/issue10"))
