"""The one way prunekit writes a file: atomically.

Every artefact (checkpoints, metrics, CSVs, JSON, reports, ONNX files) is written to a temporary file
with a unique name in the destination folder, flushed and fsynced, then renamed over the destination,
so a crash or an interruption never leaves a half-written file where a good one was, and two writers
never share a temporary name. The result gets the permissions an ordinary ``open(path, "w")`` would
give (the process umask), not ``mkstemp``'s private 0600. Imports only the standard library.

A temporary file is named ``.NAME.PID-XXXXXXXX.tmp`` (plus an extension a writer may need, e.g.
``.tmp.onnx``; files of older versions lack ``PID-``); a write killed by ``kill -9`` or a power cut can
leave one behind, which :func:`remove_stale_temp_files` deletes: every atomic write does so in its own
folder, and the run-folder lock under the whole folder when a command starts there.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


TEMP_SUFFIX = ".tmp"
# ``.NAME.`` + the writer's pid and ``-`` (absent in older files) + mkstemp's 8 random characters + ``.tmp``
# (+ an optional extension)
TEMP_PATTERN = re.compile(r"^\.(?P<dest>.+?)\.(?:(?P<pid>\d+)-)?[a-z0-9_]{8}\.tmp(?P<ext>\.[A-Za-z0-9]+)?$")
STALE_TEMP_AGE_S = 10.0  # younger temporaries may belong to a write still in progress


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host (also one of another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    except OverflowError:
        return False
    return True


def is_stale_temp(path: Path, now: float, min_age_s: float) -> bool:
    """A temporary file of a killed write: named like one, unmodified for ``min_age_s`` seconds, and (when its
    name records the writer's pid) that process is gone."""
    match = TEMP_PATTERN.match(path.name)
    if match is None:
        return False
    try:
        if now - path.lstat().st_mtime < min_age_s:
            return False
    except OSError:
        return False
    return match.group("pid") is None or not pid_alive(int(match.group("pid")))


def remove_stale_temp_files(folder: str | Path, min_age_s: float = STALE_TEMP_AGE_S,
                            recursive: bool = True) -> list[Path]:
    """Delete the temporary files of killed atomic writes (:func:`is_stale_temp`) in ``folder`` (and its
    subfolders when ``recursive``). Returns the removed paths; unreadable folders are skipped."""
    removed, now = [], time.time()
    for directory, _, names in os.walk(folder):
        for name in names:
            path = Path(directory) / name
            if is_stale_temp(path, now, min_age_s):
                try:
                    path.unlink()
                    removed.append(path)
                except OSError:
                    continue
        if not recursive:
            break
    return removed


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; when the block finishes without an exception the
    temporary file is fsynced and renamed to ``path``, else it is removed and ``path`` is left as it was.
    For writers that need a file name (e.g. ``torch.onnx.export``); ``suffix`` is appended after
    ``.tmp`` (``".onnx"`` → ``.NAME.PID-XXXXXXXX.tmp.onnx``). Creates the parent folder and first deletes
    the stale temporaries of killed writes in it (:func:`remove_stale_temp_files`, not recursive), so a
    ``kill -9`` leaves no full-size litter beyond the next write to that folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent, recursive=False)
    suffix = suffix if suffix.startswith(TEMP_SUFFIX) else TEMP_SUFFIX + suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except Exception as exc:
        raise_with_destination(exc, path)
        raise
    finally:
        Path(tmp).unlink(missing_ok=True)


def raise_with_destination(exc: BaseException, path: Path) -> None:
    """Re-raise an OSError that ``exc`` is or wraps (e.g. the ENOSPC behind torch's ``enforce fail at
    inline_container.cc``, which has no file name) as an OSError naming the destination ``path``."""
    cause = exc
    while cause is not None and not (isinstance(cause, OSError) and cause.errno is not None):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        raise OSError(cause.errno, cause.strerror or os.strerror(cause.errno), str(path)) from exc


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(binary file)`` on a temporary file beside ``path`` and rename it into place atomically.
    Returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically. Returns ``path``."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """``rows`` as CSV text with a header of ``columns`` (extra keys ignored, missing ones empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def atomic_write_csv(path: str | Path, rows: Sequence[dict], columns: Sequence[str]) -> Path:
    """Write ``rows`` as CSV (see :func:`csv_text`) to ``path`` atomically. Returns ``path``."""
    return atomic_write_text(path, csv_text(rows, columns))


def destination_of(path: str | os.PathLike) -> str:
    """The file an atomic write's temporary ``path`` stands for (``dir/.x.pt.ab12cd34.tmp`` → ``dir/x.pt``);
    any other path unchanged."""
    path = Path(path)
    match = TEMP_PATTERN.match(path.name)
    return str(path) if match is None else str(path.with_name(match.group("dest")))
