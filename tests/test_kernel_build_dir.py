"""Where the compiled kernels are built and found: torch's conventions, never the package,
a prebuilt library in a read-only location, one line at a first-use build."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from meprop import kernels
from meprop.kernels import _build

PACKAGE = Path(kernels.__file__).resolve().parent


def test_build_root_follows_torch_then_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("MEPROP_KERNELS_DIR", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    assert _build.build_root() == tmp_path / "ext" / "meprop"
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert _build.build_root() == tmp_path / "cache" / "meprop" / "kernels"
    monkeypatch.setenv("MEPROP_KERNELS_DIR", str(tmp_path / "mine"))
    assert _build.build_dir() == tmp_path / "mine" / _build.build_key()
    assert PACKAGE not in _build.built_path().parents


def test_a_prebuilt_library_in_a_read_only_location_is_used(monkeypatch, tmp_path):
    """A read-only install shipping the library loads it instead of compiling a copy."""
    source = Path(kernels.library_path() or "")
    if not kernels.load() or not source.is_file():
        pytest.skip("meprop kernels not built")
    prebuilt = tmp_path / "prebuilt"
    folder = prebuilt / _build.build_key()
    folder.mkdir(parents=True)
    shutil.copy(source, folder / source.name)
    for path in (folder / source.name, folder, prebuilt):
        path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        script = textwrap.dedent(f"""
            import torch
            from meprop.kernels import _build
            _build.PREBUILT = __import__("pathlib").Path({str(prebuilt)!r})
            from meprop import kernels
            assert kernels.load(), kernels.unavailable_reason()
            print(kernels.library_path())
            print(sorted(__import__("os").listdir({str(tmp_path / "cache")!r})) if
                  __import__("os").path.exists({str(tmp_path / "cache")!r}) else [])
        """)
        env = dict(os.environ, MEPROP_KERNELS="on", XDG_CACHE_HOME=str(tmp_path / "cache"))
        env.pop("MEPROP_KERNELS_DIR", None)
        env.pop("TORCH_EXTENSIONS_DIR", None)
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                timeout=300, cwd=PACKAGE.parents[1])
        assert result.returncode == 0, result.stderr[-3000:]
        loaded, cache = result.stdout.strip().splitlines()[-2:]
        assert loaded == str(folder / source.name)
        assert "compiling" not in result.stderr
        assert cache == "[]"  # nothing compiled into the user cache
    finally:
        for path in (prebuilt, folder, folder / source.name):
            path.chmod(stat.S_IRWXU)


def test_a_first_use_build_says_so_in_one_line(monkeypatch, capsys, tmp_path):
    def fake_build(verbose=False):
        return tmp_path / "lib.so"

    monkeypatch.setattr(_build, "build", fake_build)
    path = kernels._build_at_first_use(_build)
    err = capsys.readouterr().err
    assert path == tmp_path / "lib.so"
    assert err.count("\n") == 1 and "compiling the CPU kernels at first use" in err and " s\n" in err



def test_two_processes_building_at_once_leave_one_whole_library(tmp_path):
    """Concurrent builds without ninja: each compiles to its own temporary file and renames it
    into place, so neither sees the other's half-written output and no temporary is left.

    The compiler is a stand-in that writes its output slowly in pieces (a torn write would be
    visible as a mix of the two processes' contents); the real compile is exercised by the
    kernel tests.
    """
    fake = tmp_path / "fake-c++"
    fake.write_text(textwrap.dedent("""\
        #!/usr/bin/env python3
        import sys, time, os
        out = sys.argv[sys.argv.index("-o") + 1]
        with open(out, "w") as f:
            for _ in range(20):
                f.write(f"{os.getpid()}\\n"); f.flush(); time.sleep(0.01)
        """))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    script = textwrap.dedent("""\
        from meprop.kernels import _build
        _build.build_dir().mkdir(parents=True, exist_ok=True)
        _build._compile_directly(_build.build_dir(), verbose=False)
        """)
    env = {**os.environ, "CXX": str(fake), "MEPROP_KERNELS_DIR": str(tmp_path / "kernels"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    folder = tmp_path / "kernels" / _build.build_key()
    library = folder / f"{_build.library_name()}.so"
    lines = library.read_text().splitlines()
    assert len(lines) == 20 and len(set(lines)) == 1  # one process's whole output, not a mix
    assert sorted(p.name for p in folder.iterdir()) == [library.name, "unity_0.cpp"]  # no temporary left


def _fake_load(seen: list, folder: Path):
    """A stand-in for cpp_extension.load: records whether torch's lock file is there, writes the library."""
    def load(**kwargs):
        seen.append((folder / "lock").exists())
        _build.built_path().write_bytes(b"")
    return load


def test_a_lock_left_by_a_killed_build_does_not_block_the_next(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    monkeypatch.setenv("MEPROP_KERNELS_DIR", str(tmp_path))
    monkeypatch.setattr(_build.shutil, "which", lambda name, *a, **k: "/usr/bin/ninja")
    monkeypatch.setattr(_build, "_ensure_ninja_on_path", lambda: None)
    folder = _build.build_dir()
    folder.mkdir(parents=True)
    (folder / "lock").touch()  # torch's FileBaton of a build that was killed: load() would wait forever
    seen: list = []
    monkeypatch.setattr(cpp_extension, "load", _fake_load(seen, folder))
    assert _build.build() == _build.built_path()
    assert seen == [False]


def test_a_running_build_is_waited_for(tmp_path):
    """A second process holding the build lock makes build() wait until it lets go."""
    import select

    code = textwrap.dedent("""
        import fcntl, sys, time
        with open(sys.argv[1], "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            print("held", flush=True)
            time.sleep(1.0)
            print("letting go", flush=True)
    """)
    folder = tmp_path / "b"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder / "build.flock")], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    with _build._exclusive_build(folder):
        ready, _, _ = select.select([holder.stdout], [], [], 0)  # printed before it let go
        assert ready and holder.stdout.readline().strip() == "letting go"
    holder.wait()


@pytest.mark.parametrize("cores", [1, 2, 3, 64])
def test_unity_groups_hold_every_source_once_one_group_per_core(cores):
    groups = _build.unity_groups(cores=cores)
    assert len(groups) == min(cores, len(_build.SOURCES))
    assert all(groups)  # no empty translation unit
    assert sorted(s for group in groups for s in group) == sorted(_build.SOURCES)
    sizes = sorted(sum(s.stat().st_size for s in group) for group in groups)
    largest = max(s.stat().st_size for s in _build.SOURCES)
    assert sizes[-1] - sizes[0] <= largest  # balanced to within one source


def test_unity_groups_follow_the_cores_this_process_may_use_and_max_jobs(monkeypatch):
    monkeypatch.setattr(_build.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.delenv("MAX_JOBS", raising=False)
    assert len(_build.unity_groups()) == 3
    monkeypatch.setenv("MAX_JOBS", "2")
    assert len(_build.unity_groups()) == 2


def test_unity_sources_are_rewritten_only_when_their_text_changes(tmp_path):
    groups = _build.unity_groups(cores=2)
    first = _build.write_unity_sources(tmp_path, groups)
    stamps = [p.stat().st_mtime_ns for p in first]
    texts = [p.read_text() for p in first]
    assert _build.write_unity_sources(tmp_path, groups) == first
    assert [p.stat().st_mtime_ns for p in first] == stamps  # ninja sees nothing to recompile
    assert all(f'#include "{s}"' in text for group, text in zip(groups, texts) for s in group)
    _build.write_unity_sources(tmp_path, [groups[1], groups[0]])
    assert first[0].read_text() == texts[1]


@pytest.mark.slow
def test_every_source_compiles_in_one_translation_unit(tmp_path):
    """Any grouping of the sources compiles: no two sources define the same helper (syntax only)."""
    (unity,) = _build.write_unity_sources(tmp_path, _build.unity_groups(cores=1))
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        pytest.skip(f"no C++ compiler ({compiler})")
    done = subprocess.run([compiler, "-fsyntax-only", *_build.compile_flags(), str(unity)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
