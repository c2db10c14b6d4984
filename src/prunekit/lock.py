"""One writer per run folder: a lock file with the owner's pid and host.

Every command that writes a run folder (``train``, ``finetune``, ``prune``, ``run``, ``sweep``,
``sensitivity``) holds :func:`run_lock` on it for as long as it writes. A second writer gets a one-line
:class:`PrunekitError` naming the process that holds the folder. A lock whose owner is gone (a killed
process on this host, or a lock file left half-written for 10 s) is taken over with a notice on stderr, so
resuming after a crash needs no ``--force``; a younger lock file without an owner record is refused by name
(it may be a prunekit starting, or a file someone else wrote). Taking a lock also removes the temporary files
a killed atomic write left in the folder (:func:`prunekit.atomic.remove_stale_temp_files`). Commands lock
before they load any data, so a second writer fails at once; a folder the lock created and nothing was
written to is removed again on exit.

The lock is advisory (other programs can still write) and re-entrant within one process: the pipeline may
lock a folder the command already holds. Processes of another host are never judged dead; delete the lock
file by hand when such a host is gone for good. Under ``torchrun`` only rank 0 writes, so only rank 0 locks.
Imports only the standard library.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from prunekit.atomic import pid_alive, remove_stale_temp_files
from prunekit.errors import PrunekitError

LOCK_NAME = ".prunekit.lock"
UNREADABLE_LOCK_AGE_S = 10.0  # an empty/garbled lock file older than this is a writer killed while locking
RECORD_WAIT_S = 1.0  # a starting prunekit writes its record microseconds after creating the file

_held: dict[Path, int] = {}  # folders this process holds, with their nesting depth


def lock_path(folder: str | Path) -> Path:
    return Path(folder) / LOCK_NAME


def owner_of(path: Path) -> dict | None:
    """The owner record of lock file ``path``, or None when it is missing, empty or garbled."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def is_stale(path: Path, owner: dict | None) -> bool:
    """A lock nobody holds any more: its owner is a dead pid of this host, or the file never got its record."""
    if owner is None:
        try:
            return time.time() - path.stat().st_mtime > UNREADABLE_LOCK_AGE_S
        except FileNotFoundError:
            return True
    return owner.get("host") == socket.gethostname() and not pid_alive(owner["pid"])


def describe(owner: dict | None) -> str:
    if owner is None:
        return "an unknown process (its lock file holds no owner record)"
    command = f" ({owner['command']})" if owner.get("command") else ""
    return f"process {owner['pid']} on {owner.get('host', '?')}{command}, since {owner.get('started', '?')}"


def settled_owner(path: Path) -> dict | None:
    """:func:`owner_of` ``path``, read again for up to :data:`RECORD_WAIT_S` while it has no record yet (a
    prunekit that has just created the file is writing it)."""
    deadline = time.monotonic() + RECORD_WAIT_S
    owner = owner_of(path)
    while owner is None and path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
        owner = owner_of(path)
    return owner


def unreadable_reason(path: Path) -> str:
    """Why lock file ``path`` gives no owner record: the OS error reading it, or what is wrong inside."""
    try:
        text = path.read_text()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return "it is empty" if not text.strip() else "it is not a prunekit lock record"


def secondary_rank() -> bool:
    """True in a ``torchrun`` process other than rank 0 (those never write run folders)."""
    return os.environ.get("RANK", "0") not in ("", "0")


def acquire(folder: Path, command: str) -> None:
    """Create ``folder/.prunekit.lock`` exclusively (taking over a stale one); PrunekitError when held."""
    path = lock_path(folder)
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                         "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = settled_owner(path)
            if owner is None and not is_stale(path, owner):
                raise PrunekitError(
                    f"cannot tell who holds {folder}: its lock file {path} is unreadable ({unreadable_reason(path)})"
                    f"; if no prunekit is writing there, delete {path}") from None
            if not is_stale(path, owner):
                raise PrunekitError(
                    f"{folder} is being written by {describe(owner)}; wait for it to finish, or use another "
                    f"folder (if that process is gone, delete {path})") from None
            print(f"prunekit: taking over {path} from {describe(owner)}, which is no longer running",
                  file=sys.stderr)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(record)
        return
    raise PrunekitError(f"could not lock {folder}: {path} keeps reappearing; another prunekit is starting there")


def remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty; stop at the first that is not."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty: the run wrote something, keep it and its parents
            return


@contextmanager
def run_lock(folder: str | Path, command: str = "") -> Iterator[Path]:
    """Hold the lock of run folder ``folder`` (created if missing) for the block; yields the folder.

    Side effects: creates ``folder`` (removed again on exit, with the parents it created, while they are empty) and
    ``folder/.prunekit.lock`` (removed on exit), deletes stale temporary files of killed atomic writes under
    ``folder``, prints a notice when it takes over a dead owner's lock. Raises :class:`PrunekitError` when a
    live process holds it.
    """
    folder = Path(folder)
    if secondary_rank():
        yield folder
        return
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key not in _held:
        acquire(folder, command or " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv)))
        remove_stale_temp_files(folder)
    _held[key] = _held.get(key, 0) + 1
    try:
        yield folder
    finally:
        _held[key] -= 1
        if not _held[key]:
            del _held[key]
            owner = owner_of(lock_path(folder))
            if owner is not None and owner["pid"] == os.getpid():
                lock_path(folder).unlink(missing_ok=True)
            remove_empty(created)
