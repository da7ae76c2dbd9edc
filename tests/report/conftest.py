"""Fixtures for the report tests: synthetic result sets written in the results schema."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/report/report_fixtures.py

import report_fixtures as synthetic  # noqa: E402


@pytest.fixture
def quick_jsonl(tmp_path: Path) -> Path:
    """A quick-profile-like run with known speedups; one noisy cell (unified, 1024, 64, 4%)."""
    return synthetic.write_jsonl(tmp_path / "run" / "results.jsonl",
                                 synthetic.quick_like_records(noisy_case=("unified", 1024, 64, 0.04)))


@pytest.fixture
def quick_records() -> list[dict]:
    return synthetic.quick_like_records(noisy_case=("unified", 1024, 64, 0.04))
