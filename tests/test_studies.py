"""The long time-to-accuracy runs the repository keeps in ``studies/``: every archive reads as
meprop results holding convergence records, and ``studies/README.md`` names its folder with
the command that made it (the ``argv`` its ``env`` records carry)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from meprop.lab.results.store import read_records

STUDIES = Path(__file__).resolve().parents[1] / "studies"
ARCHIVES = sorted(STUDIES.glob("*/*/results.jsonl.gz"))


def _readme() -> str:
    return (STUDIES / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda p: p.parent.relative_to(STUDIES).as_posix())
def test_each_archived_study_reads_and_its_command_is_documented(archive):
    records = read_records(archive)
    assert any(r["type"] == "convergence" for r in records), f"{archive}: no convergence record"
    commands = {shlex.join(["meprop", *r["env"]["argv"][1:]]) for r in records if r["type"] == "env"}
    readme = _readme()
    undocumented = sorted(c for c in commands if c not in readme)
    assert not undocumented, f"studies/README.md does not give the command of {archive}: {undocumented}"


def test_the_readme_lists_only_archived_runs():
    rows = [line.split("|")[1].strip().strip("`/") for line in _readme().splitlines() if line.startswith("| `studies/")]
    missing = sorted(r for r in rows if not (STUDIES.parent / r / "results.jsonl.gz").exists())
    assert not missing, f"studies/README.md lists runs with no archive: {missing}"
