"""The JSON-lines results store: the writer, the validating reader and :class:`ResultsError`.

Records follow :mod:`meprop.lab.results.schema` (docs/results_schema.md). A run appends one
``env`` record, then one record per case (``bench``) or epoch (``train``), each written
and flushed (and fsynced) as soon as it is complete, so an interrupted run keeps
everything it finished. ``--resume`` reads the keys already present and skips them; a
resumed run is a new run (new ``run_id``, its own ``env`` record) appended to the same
file. Nothing is ever overwritten.

:func:`read_records` reads one file and refuses corrupt or foreign files with a
:class:`ResultsError` that names the file and the line.

One reader (:func:`read_lines`), one policy for the end of a file, shared by ``meprop
report`` and ``--resume``: a last line without a trailing newline that is a complete,
valid record is kept (a writer adds the newline before appending, so the next record is
never glued onto it); a last line without a newline that does not parse (cut short by an
interrupted write) is dropped with a warning naming the file and the line: the report
ignores it, a resuming writer truncates it away.

A :class:`ResultsWriter` holds an exclusive advisory lock (``fcntl.flock``) on its file
for as long as it is open: a second writer (two ``meprop bench`` or ``meprop train`` runs
into the same ``--out``) is refused with :class:`ResultsLockedError`, naming the file and
the pid holding it where the system tells (``/proc/locks``).
A finished results file may be archived gzip-compressed (``results.jsonl.gz``, as the
repository's ``studies/`` keeps its long runs): the reader reads it, a run directory holding
only the archive resolves to it, and a writer refuses it (an archive is read-only: unpack it
to ``--resume``).
Tables of records (pandas) are built by :mod:`meprop.lab.report.frames`.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from meprop.lab.results.schema import SCHEMA, schema_problem

__all__ = [
    "RESULTS_FILENAME",
    "ARCHIVE_SUFFIX",
    "ResultsError",
    "ResultsLockedError",
    "ResultsWriteError",
    "new_run_id",
    "ResultsWriter",
    "read_lines",
    "results_bytes",
    "read_records",
    "load_records",
    "results_path",
    "results_paths",
]

RESULTS_FILENAME = "results.jsonl"
#: The suffix of an archived (gzip-compressed, read-only) results file.
ARCHIVE_SUFFIX = ".gz"


class ResultsError(ValueError):
    """Results input that cannot be used: missing, empty, corrupt, foreign or of another schema version."""


class ResultsLockedError(RuntimeError):
    """Another process is writing to this results file (it holds the advisory lock); not a format problem."""


class ResultsWriteError(RuntimeError):
    """A record could not be written (disk full, I/O error); the file keeps every earlier record."""


def new_run_id() -> str:
    """``20261121T051200Z-ab12cd``: UTC time and 6 random hex digits."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def results_path(path: str | os.PathLike) -> Path:
    """``path`` itself if it is a file; for a directory its ``results.jsonl``, or its archived
    ``results.jsonl.gz`` when only that is there."""
    path = Path(path)
    if not path.is_dir():
        return path
    plain = path / RESULTS_FILENAME
    archive = plain.with_name(RESULTS_FILENAME + ARCHIVE_SUFFIX)
    return archive if archive.exists() and not plain.exists() else plain


class ResultsWriter:
    """Appends records to one JSON-lines file, flushing each one.

    ``resume=False`` refuses an existing file that holds results (never lose earlier
    results); a file with nothing but ``env`` records (a run that failed before its first
    result) counts as empty. ``resume=True`` appends to it and exposes, as ``done``, the
    keys whose latest ``bench`` record is ``ok`` (cases recorded as skipped, e.g. out of
    memory or cuda not available, are tried again); ``records`` holds what was read.
    The file is locked (``fcntl.flock``, exclusive) from opening to :meth:`close`; a
    second writer gets :class:`ResultsLockedError`. The parent directory is created; an
    unwritable location raises ``ValueError`` naming it.
    """

    def __init__(self, path: str | os.PathLike, *, resume: bool = False):
        self.path = Path(path)
        if self.path.suffix == ARCHIVE_SUFFIX:
            raise ValueError(f"{str(self.path)!r} is an archived (gzip-compressed) results file, read-only: "
                             f"write a new results file, or unpack it (gunzip) to resume it")
        self.done: set[str] = set()
        self.records: list[dict] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(
                f"cannot create the output folder {str(self.path.parent)!r}: {error.strerror}"
            ) from None
        try:
            fh = open(self.path, "a+b")
        except OSError as error:
            raise ValueError(
                f"cannot write results to {str(self.path)!r}: {error.strerror}"
            ) from None
        try:
            _lock(fh, self.path)  # before reading: a concurrent --resume sees our records
            self._open(fh, resume)
        except BaseException:
            fh.close()
            raise
        self._fh = fh

    def _open(self, fh, resume: bool) -> None:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return
        try:
            lines, good_bytes = read_lines(self.path)
            records = [record for _, record in lines]
        except ResultsError as error:
            if resume:
                raise
            raise FileExistsError(
                f"{self.path} already exists and is not a results file this run can add to "
                f"({error}); choose another output folder"
            ) from None
        if not resume and any(r["type"] != "env" for r in records):
            raise FileExistsError(
                f"{self.path} already holds results; pass --resume to add to it "
                f"(finished cases are skipped) or choose another output folder"
            )
        self.records = records
        self.done = _done_keys(records)
        if good_bytes < size:  # drop a line cut short by a crash (the reader warned)
            fh.truncate(good_bytes)
        if good_bytes > 0:
            fh.seek(good_bytes - 1)
            if fh.read(1) != b"\n":  # a complete last record without its newline
                fh.seek(0, os.SEEK_END)
                fh.write(b"\n")
                fh.flush()

    def write(self, record: dict) -> None:
        """Append ``record`` as one line, on disk when this returns.

        A write that fails (``ENOSPC``, ``EIO``, ...) is undone (the file is cut back to
        its earlier records, so it stays readable and ``--resume`` continues from them)
        and raises :class:`ResultsWriteError` naming the file and the error.
        """
        line = json.dumps(record, allow_nan=False, separators=(",", ":"))
        data = memoryview(line.encode("utf-8") + b"\n")
        fd = self._fh.fileno()  # the file object's buffer is empty: every write goes here
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        except OSError as error:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass  # the reader drops a last line cut short, with a warning
            raise ResultsWriteError(
                f"cannot write results to {str(self.path)!r}: {error.strerror or error}; the "
                f"records written before are kept: free space and rerun with --resume"
            ) from None
        if record.get("type") == "bench":
            if record.get("status") == "ok":
                self.done.add(record["key"])
            else:
                self.done.discard(record["key"])

    def close(self) -> None:
        self._fh.close()  # releases the lock

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _done_keys(records: list[dict]) -> set[str]:
    """Keys whose latest ``bench`` record is ``ok`` (a later skip or retry wins)."""
    latest: dict[str, str] = {}
    for record in records:
        if record["type"] == "bench":
            latest[record["key"]] = record["status"]
    return {key for key, status in latest.items() if status == "ok"}


def _lock(fh, path: Path) -> None:
    """Take an exclusive, non-blocking advisory lock on ``fh`` or raise :class:`ResultsLockedError`."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        holder = _lock_holder(fh)
        who = f"process {holder}" if holder is not None else "another process"
        raise ResultsLockedError(
            f"{path} is being written by {who} (it holds the file's lock): two runs into one "
            f"results file would write duplicates and compete for the cores; wait for it to "
            f"finish (then use --resume) or choose another output folder"
        ) from None


def _lock_holder(fh) -> int | None:
    """The pid holding an flock on ``fh``'s file, from Linux's /proc/locks; None if unknown."""
    try:
        inode = os.fstat(fh.fileno()).st_ino
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    pids = set()
    for line in text.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF"; waiters carry a "->" field
        if len(fields) < 6 or fields[1] == "->" or fields[1] != "FLOCK":
            continue
        try:
            pid, where = int(fields[4]), fields[5]
        except ValueError:
            continue
        if where.rsplit(":", 1)[-1] == str(inode):
            pids.add(pid)
    return pids.pop() if len(pids) == 1 else None


def results_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of one results file, decompressed when it is an archive (``*.gz``); a file that
    cannot be read, or a broken archive, raises :class:`ResultsError` naming it."""
    try:
        data = Path(path).read_bytes()
        return gzip.decompress(data) if Path(path).suffix == ARCHIVE_SUFFIX else data
    except OSError as error:  # gzip.BadGzipFile is an OSError
        raise ResultsError(f"{path}: cannot read results file: {error.strerror or error}") from None
    except EOFError:
        raise ResultsError(f"{path}: cannot read results file: the archive is cut short") from None


def read_lines(path: Path) -> tuple[list[tuple[int, dict]], int]:
    """Parse and validate every line of one file: ``[(line number, record)]`` and the byte length kept.

    The one policy for a file's last line (used by the report and by ``--resume``): with
    no trailing newline, a complete valid record is kept; text that does not parse (a
    write cut short) is left out with a warning naming the file and line. Any other
    corrupt line raises :class:`ResultsError` naming the file and line.
    """
    data = results_bytes(path)
    records: list[tuple[int, dict]] = []
    offset = 0
    lines = data.split(b"\n")
    for lineno, raw in enumerate(lines, start=1):
        is_last = lineno == len(lines)  # only the last piece lacks a newline
        if not raw.strip():
            offset += len(raw) + (0 if is_last else 1)
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            if is_last:  # no newline after it: a write cut short
                warnings.warn(f"{path}:{lineno}: ignoring an incomplete last line, cut short by "
                              f"an interrupted write ({error})")
                break
            raise ResultsError(
                f"{path}:{lineno}: not a JSON object on this line ({error}); "
                f"is this a meprop results file (JSON lines, schema {SCHEMA!r})?"
            ) from None
        problem = schema_problem(record)
        if problem is not None:
            raise ResultsError(f"{path}:{lineno}: {problem}")
        records.append((lineno, record))
        offset += len(raw) + (0 if is_last else 1)
    return records, offset


def read_records(path: str | os.PathLike) -> list[dict]:
    """All records of one results file (or run directory), validated."""
    return [record for _, record in read_lines(results_path(path))[0]]


def results_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The results files named by ``paths`` (files, or run directories holding results.jsonl)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    resolved = [results_path(p) for p in paths]
    if not resolved:
        raise ValueError("paths must name at least one results file or run directory, got none")
    for p in resolved:
        if not p.exists():
            raise FileNotFoundError(f"results file not found: {p}")
    return resolved


def load_records(paths) -> list[dict]:
    """The records of several files, each tagged with its ``_source`` path (not part of the schema)."""
    return [{**record, "_source": str(path)} for path in results_paths(paths) for record in read_records(path)]
