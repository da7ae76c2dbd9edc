"""The fair-baseline allocator setting: page faults of a fresh 64 MB tensor, counted (not timed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from meprop.lab.engine import allocator

_PROBE = """
import json, resource, sys, torch
from meprop.lab.engine import allocator
record = allocator.apply(sys.argv[1])
def faults_of_fresh_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(4096, 4096).fill_(1.0)   # 64 MB, freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
for _ in range(12):                       # warm-up: the heap grows to its working size
    faults_of_fresh_tensor()
print(json.dumps({"record": record, "faults": [faults_of_fresh_tensor() for _ in range(3)]}))
"""


def _probe(policy: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, policy], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_fair_policy_stops_page_faulting_fresh_large_tensors():
    fair, defaults = _probe(allocator.FAIR), _probe(allocator.DEFAULTS)
    assert fair["record"]["policy"] == "no-page-faults" and fair["record"]["applied"] is True
    assert defaults["record"]["policy"] == "defaults" and defaults["record"]["applied"] is False
    pages = (64 << 20) // 4096
    assert min(defaults["faults"]) > pages // 2, "malloc's defaults map a fresh 64 MB block each time"
    assert max(fair["faults"]) < pages // 20, "the fair setting reuses the freed block"


def test_bad_policy_is_refused():
    with pytest.raises(ValueError, match=r"allocator policy must be one of .*'fast'"):
        allocator.apply("fast")


def test_defaults_after_fair_in_one_process_records_what_holds():
    out = subprocess.run(
        [sys.executable, "-c", "import json, warnings\nfrom meprop.lab.engine import allocator\n"
         "allocator.apply('no-page-faults')\nwith warnings.catch_warnings(record=True) as w:\n"
         "    warnings.simplefilter('always')\n    r = allocator.apply('defaults')\n"
         "print(json.dumps([r['policy'], len(w)]))"],
        capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["no-page-faults", 1]


def test_peak_memory_probe_sees_a_fresh_64_mb_buffer_every_time():
    code = ("import json, torch\nfrom meprop.lab.engine import allocator\nfrom meprop.lab.engine.runner import peak_memory\n"
            "allocator.release_large_blocks()\n"
            "fn = lambda: torch.empty(4096, 4096).fill_(1.0)\n"
            "print(json.dumps([peak_memory(fn, 'cpu')[0] for _ in range(4)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    sizes = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(60 << 20 <= size <= 72 << 20 for size in sizes), sizes  # 64 MiB, give or take pages
    assert max(sizes[1:]) - min(sizes[1:]) < (2 << 20), "no sampling: the same each call"
