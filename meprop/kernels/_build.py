"""Building the compiled kernels: one shared library, keyed by source hash, torch and compiler flags.

``build()`` compiles ``csrc/meprop_kernels.cpp`` with :func:`torch.utils.cpp_extension.load`
(ninja + the system C++ compiler; nothing is downloaded) into ``build_dir()``, a folder named
after a hash of the source, the torch version and the flags, so a changed source or a new torch
builds a fresh library next to the old one and never loads a stale one. The library holds no
Python bindings (plain ``TORCH_LIBRARY`` ops), so it does not depend on the Python version.

Where: ``$MEPROP_KERNELS_DIR`` if set, else ``meprop/kernels/_build/`` inside the package when
it is writable (the editable install of ``make setup``), else ``~/.cache/meprop/kernels``.

Flags: ``-O3`` (auto-vectorisation of the plain loops), ``-fno-math-errno`` (so ``sqrt`` in a
loop vectorises; nothing reads errno), ``-fopenmp`` (``at::parallel_for`` is
OpenMP in torch's CPU wheel; the library binds to the ``libgomp.so.1`` torch already loaded). No
``-march=native``: the hot loops carry ``target_clones`` (AVX-512, AVX2+FMA, baseline x86-64)
and the loader picks one for the CPU it runs on, so a library built on one x86-64 machine runs
on another.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import torch

__all__ = ["SOURCES", "CFLAGS", "LDFLAGS", "build_key", "build_dir", "library_path", "build"]

_HERE = Path(__file__).resolve().parent
SOURCES = (_HERE / "csrc" / "meprop_kernels.cpp", _HERE / "csrc" / "lazy_adam_rows.cpp")
CFLAGS = ("-O3", "-fno-math-errno", "-fopenmp", "-std=c++17")
LDFLAGS = ("-fopenmp",)


def build_key() -> str:
    """A short hash of what the library depends on: sources, torch version, flags, platform."""
    digest = hashlib.sha256()
    for source in SOURCES:
        digest.update(source.read_bytes())
    digest.update(repr((torch.__version__, torch.version.git_version, CFLAGS, LDFLAGS, sys.platform)).encode())
    return digest.hexdigest()[:16]


def _root() -> Path:
    env = os.environ.get("MEPROP_KERNELS_DIR")
    if env:
        return Path(env)
    local = _HERE / "_build"
    try:
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK):
            return local
    except OSError:
        pass
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "meprop" / "kernels"


def library_name() -> str:
    return f"meprop_kernels_{build_key()}"


def build_dir() -> Path:
    return _root() / build_key()


def library_path() -> Path:
    """Where the built library is (or will be)."""
    return build_dir() / f"{library_name()}.so"


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


def _compile_directly(folder: Path, verbose: bool) -> None:
    """One compiler call with torch's include and library paths (what load() has ninja run)."""
    import subprocess  # noqa: PLC0415

    from torch.utils import cpp_extension  # noqa: PLC0415

    compiler = os.environ.get("CXX", "c++")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    command = [compiler, "-shared", "-fPIC", *CFLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
               *(f"-I{p}" for p in cpp_extension.include_paths()), *(str(s) for s in SOURCES),
               *(f"-L{p}" for p in cpp_extension.library_paths()), "-lc10", "-ltorch", "-ltorch_cpu",
               *LDFLAGS, "-o", str(folder / f"{library_name()}.so.tmp")]
    if verbose:
        print(" ".join(command))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{compiler} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    os.replace(folder / f"{library_name()}.so.tmp", library_path())  # atomic: no half-written library


def build(verbose: bool = False) -> Path:
    """Compile (if needed) and load the library; returns its path. Raises on any failure."""
    from torch.utils import cpp_extension  # noqa: PLC0415 - heavy, only when building

    if sys.platform != "linux":
        raise RuntimeError(f"the compiled kernels are built on Linux only, this is {sys.platform}")
    _ensure_ninja_on_path()
    folder = build_dir()
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if shutil.which("ninja") is None:  # torch's load() needs ninja; the library does not require it
        _compile_directly(folder, verbose)
    else:
        cpp_extension.load(
            name=library_name(),
            sources=[str(s) for s in SOURCES],
            extra_cflags=list(CFLAGS),
            extra_ldflags=list(LDFLAGS),
            build_directory=str(folder),
            is_python_module=False,
            verbose=verbose,
        )
    path = library_path()
    if not path.exists():
        raise RuntimeError(f"the build finished but {path} is missing")
    if verbose:
        print(f"meprop kernels built in {time.perf_counter() - start:.1f} s: {path}")
    return path
