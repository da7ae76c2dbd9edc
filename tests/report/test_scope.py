"""The note under the report's title: which profile it shows and how to run the fuller one."""

from __future__ import annotations

import re

from meprop.lab.converge.presets import CONVERGENCE_PRESETS
from meprop.lab.report.build import build_report
from meprop.lab.report.scope import scope_html
from meprop.lab.plan.profiles import PROFILES

from report_fixtures import env_record, tiny_records, write_jsonl


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


def test_quick_report_names_its_profile_and_the_fuller_one():
    note = _text(scope_html([env_record("r", profile="quick")], 41))
    assert note.startswith("This report shows the benchmark profile quick (41 cases; quick: ")
    assert "The fuller grid: make report PROFILE=standard (" + PROFILES["standard"].description + ")" in note
    assert "Other profiles: smoke, paper, full, optimizers, perf" in note


def test_every_fuller_profile_exists_and_is_named():
    for profile in PROFILES.values():
        if profile.fuller is not None:
            assert profile.fuller in PROFILES and profile.fuller != profile.name
            assert f"PROFILE={profile.fuller}" in scope_html([env_record("r", profile=profile.name)], 1)


def test_presets_shown_and_how_to_run_the_others():
    records = [env_record("r", profile="quick"), {"type": "convergence", "preset": "pos-adam"},
               {"type": "convergence", "preset": "mnist-adam"}]
    note = _text(scope_html(records, 3))
    assert '"Does it pay off?" shows the time-to-accuracy presets mnist-adam, pos-adam.' in note
    assert "make report CONVERGE_PRESETS=all" in note
    others = [p for p in CONVERGENCE_PRESETS if p not in ("mnist-adam", "pos-adam")]
    assert ", ".join(others) in note


def test_no_profile_and_no_preset_no_note():
    assert scope_html([{"type": "env", "env": {"profile": None}}], 0) == ""


def test_the_page_carries_the_note_under_its_title(tmp_path):
    records = tiny_records()
    write_jsonl(tmp_path / "r.jsonl", records)
    page = build_report([tmp_path / "r.jsonl"], tmp_path / "out").index.read_text()
    assert '<p class="scope">This report shows the benchmark profile <b>quick</b>' in page
    assert page.index('class="scope"') < page.index("<nav>")
