"""tox.ini stays usable: its envs resolve, torch is pinned through the
constraints file, and nothing asks pip for `-c FILE` without a requirement.

The real installation (`tox -e py3 --notest`, a minute or two) runs in .ci/run; here
`tox config` only reads the file (about a second).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("tox", reason="tox is not installed (pip install tox)")


def _config(envs: str, *keys: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tox", "config", "-e", envs, "-k", *keys],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _section(text: str, env: str) -> str:
    return text.split(f"[testenv:{env}]", 1)[1].split("\n[testenv:", 1)[0]


def test_envs_resolve_with_torch_pinned_through_constraints():
    text = _config("py3,bench,asv", "deps", "set_env", "extras", "commands")
    constraints = str(ROOT / "constraints.txt")
    for env in ("py3", "bench", "asv"):
        section = _section(text, env)
        assert f"PIP_CONSTRAINT={constraints}" in section  # every pip install tox runs is pinned
        deps = section.split("deps =", 1)[1].split("\n", 1)[0].strip()
        assert "-c" not in deps.split()  # pip refuses `-c FILE` with no requirement
        assert "extras = dev" in section
    assert "pytest" in _section(text, "py3")
    bench = _section(text, "bench")
    assert "meprop bench --profile smoke" in bench and "meprop report" in bench
    asv = _section(text, "asv")
    assert "asv machine --yes" in asv and "asv run --python=same --set-commit-hash=" in asv
    assert "torch==" in (ROOT / "constraints.txt").read_text()


def test_ci_installs_the_py3_env():
    assert "tox -e py3 --notest" in (ROOT / ".ci" / "run").read_text()
