"""The line between the library and the lab, tried for real in subprocesses.

- the library imports, converts a model and trains it with a lazy optimizer while every one of
  the lab's dependencies is unimportable (``pip install meprop`` installs torch alone);
- a lab command without the ``bench`` extra ends in one line naming the extra, status 2;
- the compiled kernels build without ninja (torch's ``load()`` needs it; the library does not).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from meprop.lab import BENCH_EXTRA_MODULES, missing_extra_modules, require_extra

ROOT = Path(__file__).resolve().parents[2]

#: run first in each subprocess: makes the lab's dependencies unimportable
_BLOCK_LAB_DEPENDENCIES = textwrap.dedent(f"""
    import sys
    for name in {BENCH_EXTRA_MODULES!r}:  # None in sys.modules: import fails, find_spec says None
        sys.modules[name] = None
""")


#: a bound on one subprocess, never a measurement: a serial build of every kernel source without
#: ninja takes minutes on 2 busy cores
_SUBPROCESS_LIMIT_S = 900


def _run(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=_SUBPROCESS_LIMIT_S, env={**os.environ, **(env or {})})


def test_the_library_trains_without_any_lab_dependency():
    code = _BLOCK_LAB_DEPENDENCIES + textwrap.dedent("""
        import torch, meprop
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
        model = meprop.convert(model, k=4)
        opt = meprop.optim.Adam(model.parameters(), lr=1e-2, lazy=True)
        x, y = torch.randn(16, 20), torch.randint(5, (16,))
        first = None
        for _ in range(30):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            first = loss.item() if first is None else first
        assert loss.item() < first, (first, loss.item())
        assert meprop.sparsified_layers(model) == ["0"]
        assert not [m for m in sys.modules if m.startswith("meprop.lab")], "the library imported the lab"
        print("ok")
    """)
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


def test_a_lab_command_without_the_extra_names_it_in_one_line():
    code = _BLOCK_LAB_DEPENDENCIES + textwrap.dedent("""
        import runpy
        sys.argv = ["meprop", "bench", "--profile", "smoke", "--list"]
        runpy.run_module("meprop", run_name="__main__")
    """)
    done = _run(code)
    assert done.returncode == 2
    # torch itself warns at import that numpy is missing; meprop says one line, no traceback
    lines = [line for line in done.stderr.splitlines() if line.startswith("meprop")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "pip install 'meprop[bench]'" in lines[0] and "pandas" in lines[0]


def test_require_extra_passes_when_installed_and_names_what_is_missing(monkeypatch, capsys):
    assert missing_extra_modules() == []
    require_extra()  # everything installed here: nothing happens
    monkeypatch.setattr("meprop.lab.BENCH_EXTRA_MODULES", ("pandas", "no_such_module_xyz"))
    with pytest.raises(SystemExit) as stop:
        require_extra()
    assert stop.value.code == 2
    assert "missing: no_such_module_xyz" in capsys.readouterr().err


@pytest.mark.slow
def test_the_kernels_build_and_load_without_ninja(tmp_path):
    code = textwrap.dedent("""
        import shutil, torch
        from meprop.kernels import _build
        real_which = shutil.which
        _build.shutil.which = lambda name, *a, **k: None if name == "ninja" else real_which(name, *a, **k)
        _build._ensure_ninja_on_path = lambda: None
        # one op family keeps the serial compile short; every source builds through ninja in set-up
        _build.SOURCES = tuple(s for s in _build.SOURCES if s.name == "lazy_adam_rows.cpp")
        path = _build.build()
        torch.ops.load_library(str(path))
        assert torch.ops.meprop.lazy_adam_rows_ is not None
        print(path)
    """)
    done = _run(code, env={"MEPROP_KERNELS_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    built = Path(done.stdout.strip().splitlines()[-1])
    assert built.exists() and tmp_path in built.parents
    assert not list(tmp_path.rglob("build.ninja")), "torch's ninja build ran"
