"""Building the compiled kernels: one shared library, keyed by source hash, torch and compiler flags.

``build()`` compiles the sources of ``csrc/`` (one per op: selection, row gathers, the linear
backward, the LSTM, the lazy Adam row update) with :func:`torch.utils.cpp_extension.load`
(ninja + the system C++ compiler; nothing is downloaded) into ``build_dir()``, a folder named
after a hash of the source, the torch version and the flags, so a changed source or a new torch
builds a fresh library next to the old one and never loads a stale one. The library holds no
Python bindings (plain ``TORCH_LIBRARY`` ops), so it does not depend on the Python version.

Where, as torch's extension tooling does it, and never inside the installed package (a
leftover folder there would outlive ``pip uninstall``):

- built into :func:`build_root`: ``$MEPROP_KERNELS_DIR`` if set, else
  ``$TORCH_EXTENSIONS_DIR/meprop`` if set, else ``$XDG_CACHE_HOME/meprop/kernels``
  (``~/.cache/meprop/kernels``);
- looked up in that folder and then in ``meprop/kernels/prebuilt/`` (a library shipped with
  the package; read-only is fine): :func:`library_path` is the first that exists.

Two processes building at once do not corrupt each other: each takes an exclusive ``flock``
on ``build.flock`` in the build folder before it compiles, and the other waits, then loads the
finished library. The kernel releases that lock when its holder dies, so an interrupted
build never blocks the next one: torch's own ``FileBaton`` (a ``lock`` file that
``cpp_extension.load`` creates and deletes) outlives a killed process, and the next build
would wait for it forever; the holder of the ``flock`` knows no other build is running and
removes a leftover one.

Unity groups: parsing torch's headers costs about 10 s per translation unit, more than most
sources' own code, so the sources are compiled as a few ``unity_<i>.cpp`` files of the build
folder, each ``#include``-ing a share of them: as many groups as cores this process may use
(:func:`unity_groups`; ``MAX_JOBS`` caps it, as it caps torch's ninja), balanced by source size.
On one core of an AMD EPYC the whole library builds in about 40 s as one unit, where one
unit per source took about 100 s on two; with a core per source it is one source per group,
as a plain build. Every source therefore keeps its helpers out of the others' way:
all of them also compile as one translation unit (a test checks it).

Flags: ``-O3`` (auto-vectorisation of the plain loops), ``-fno-math-errno`` (so ``sqrt`` in a
loop vectorises; nothing reads errno), ``-fopenmp`` (``at::parallel_for`` is
OpenMP in torch's CPU wheel; the library binds to the ``libgomp.so.1`` torch already loaded). No
``-march=native``: the hot loops carry ``target_clones`` (AVX-512, AVX2+FMA, baseline x86-64)
and the loader picks one for the CPU it runs on, so a library built on one x86-64 machine runs
on another. The language standard is the one torch's headers are written for (C++20), never
an older one that would compile them with warnings.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import torch

__all__ = ["SOURCES", "HEADERS", "CFLAGS", "CXX_STANDARD", "LDFLAGS", "compile_flags", "PREBUILT", "build_key",
           "build_root", "build_dir", "built_path", "library_path", "unity_groups", "write_unity_sources", "build"]

_HERE = Path(__file__).resolve().parent
#: One source per op family (each with its schema, CPU kernel and autograd registration).
SOURCES = tuple(_HERE / "csrc" / name for name in (
    "select.cpp", "select_avx512.cpp", "rows.cpp", "dense_rows.cpp", "linear_backward.cpp", "lstm.cpp",
    "lazy_adam_rows.cpp", "sqrt.cpp", "sample.cpp", "unified_linear.cpp"))
#: The shared headers (part of the build key: a changed header rebuilds).
HEADERS = tuple(_HERE / "csrc" / name for name in ("common.h", "linear_context.h", "select.h", "rows.h"))
CFLAGS = ("-O3", "-fno-math-errno", "-fopenmp")
#: The language standard of torch's headers (cpp_extension passes it to a ninja build; the
#: direct compile passes it itself).
CXX_STANDARD = "-std=c++20"
LDFLAGS = ("-fopenmp",)


def build_key() -> str:
    """A short hash of what the library depends on: sources, torch version, flags, platform."""
    digest = hashlib.sha256()
    for source in SOURCES + HEADERS:
        digest.update(source.read_bytes())
    digest.update(repr((torch.__version__, torch.version.git_version, CXX_STANDARD, CFLAGS, LDFLAGS,
                        sys.platform)).encode())
    return digest.hexdigest()[:16]


#: Where a library shipped with the package is looked for (read only).
PREBUILT = _HERE / "prebuilt"


def build_root() -> Path:
    """The folder libraries are built into (one sub-folder per build key)."""
    env = os.environ.get("MEPROP_KERNELS_DIR")
    if env:
        return Path(env)
    torch_dir = os.environ.get("TORCH_EXTENSIONS_DIR")
    if torch_dir:
        return Path(torch_dir) / "meprop"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "meprop" / "kernels"


def library_name() -> str:
    return f"meprop_kernels_{build_key()}"


def build_dir() -> Path:
    return build_root() / build_key()


def built_path() -> Path:
    """Where :func:`build` puts the library."""
    return build_dir() / f"{library_name()}.so"


def library_path() -> Path:
    """The library to load: the built one if it exists, else a prebuilt one, else where it will be built."""
    built = built_path()
    prebuilt = PREBUILT / build_key() / built.name
    return prebuilt if not built.exists() and prebuilt.exists() else built


def _ensure_ninja_on_path() -> None:
    # The `ninja` wheel (a dependency) puts its binary next to the interpreter; a venv used
    # without activation does not have that folder on PATH.
    if shutil.which("ninja"):
        return
    candidates = [Path(sys.executable).parent]
    try:
        import ninja  # noqa: PLC0415

        candidates.insert(0, Path(ninja.BIN_DIR))
    except Exception:  # noqa: BLE001 - the wheel is optional; the error below names what is missing
        pass
    for folder in candidates:
        if (folder / "ninja").exists():
            os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
            return


def unity_groups(cores: int | None = None) -> list[list[Path]]:
    """SOURCES split into one group per core (``cores``: default the cores this process may use,
    capped by ``MAX_JOBS``), largest first onto the lightest group; never an empty group."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        max_jobs = os.environ.get("MAX_JOBS", "")
        if max_jobs.isdigit() and int(max_jobs) > 0:
            cores = min(cores, int(max_jobs))
    groups: list[list[Path]] = [[] for _ in range(max(1, min(cores, len(SOURCES))))]
    sizes = [0] * len(groups)
    for size, source in sorted(((s.stat().st_size, s) for s in SOURCES), reverse=True):
        lightest = sizes.index(min(sizes))
        groups[lightest].append(source)
        sizes[lightest] += size
    return [sorted(group, key=SOURCES.index) for group in groups]


def write_unity_sources(folder: Path, groups: list[list[Path]]) -> list[Path]:
    """``folder/unity_<i>.cpp`` including group i's sources; a file whose text is unchanged is not
    rewritten (ninja would recompile it)."""
    paths = []
    for i, group in enumerate(groups):
        path = folder / f"unity_{i}.cpp"
        text = "// generated by meprop.kernels._build: one translation unit for these sources\n" + "".join(
            f'#include "{source}"\n' for source in group)
        if not path.exists() or path.read_text() != text:
            partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            partial.write_text(text)
            os.replace(partial, path)  # atomic: a compiler reading it never sees half of it
        paths.append(path)
    return paths


def compile_flags() -> list[str]:
    """The compiler flags of a kernel translation unit built without ninja: position-independent,
    meprop's standard and CFLAGS, torch's ABI and include paths."""
    from torch.utils import cpp_extension  # noqa: PLC0415

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return ["-fPIC", CXX_STANDARD, *CFLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
            *(f"-I{p}" for p in cpp_extension.include_paths())]


def _compile_directly(folder: Path, verbose: bool) -> None:
    """One compiler call with torch's include and library paths (what load() has ninja run)."""
    import subprocess  # noqa: PLC0415

    from torch.utils import cpp_extension  # noqa: PLC0415

    compiler = os.environ.get("CXX", "c++")
    partial = folder / f"{library_name()}.so.{os.getpid()}.tmp"  # one per process: concurrent builds never mix
    command = [compiler, "-shared", *compile_flags(),
               *(str(s) for s in write_unity_sources(folder, unity_groups(cores=1))),
               *(f"-L{p}" for p in cpp_extension.library_paths()), "-lc10", "-ltorch", "-ltorch_cpu",
               *LDFLAGS, "-o", str(partial)]
    if verbose:
        print(" ".join(command))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{compiler} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    os.replace(partial, built_path())  # atomic: a reader never sees a half-written library


@contextlib.contextmanager
def _exclusive_build(folder: Path):
    """Hold ``folder/build.flock`` (waiting for another build to finish); a torch ``lock`` file found
    while holding it was left by a build that died, and is removed."""
    import fcntl  # noqa: PLC0415 - POSIX only; the kernels build on Linux only

    with open(folder / "build.flock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (folder / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(verbose: bool = False) -> Path:
    """Compile (if needed) and load the library; returns its path. Raises on any failure."""
    from torch.utils import cpp_extension  # noqa: PLC0415 - heavy, only when building

    if sys.platform != "linux":
        raise RuntimeError(f"the compiled kernels are built on Linux only, this is {sys.platform}")
    _ensure_ninja_on_path()
    folder = build_dir()
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with _exclusive_build(folder):
        if shutil.which("ninja") is None:  # torch's load() needs ninja; the library does not require it
            _compile_directly(folder, verbose)
        else:
            cpp_extension.load(
                name=library_name(),
                sources=[str(s) for s in write_unity_sources(folder, unity_groups())],
                extra_cflags=list(CFLAGS),
                extra_ldflags=list(LDFLAGS),
                build_directory=str(folder),
                is_python_module=False,
                verbose=verbose,
            )
    path = built_path()
    if not path.exists():
        raise RuntimeError(f"the build finished but {path} is missing")
    if verbose:
        print(f"meprop kernels built in {time.perf_counter() - start:.1f} s: {path}")
    return path
