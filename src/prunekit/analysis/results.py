"""Result files of the analyses: typed CSV reads, file hashes, and a resumable table of points.

A sweep or sensitivity analysis evaluates one point at a time and rewrites its CSV after every point
through a temporary file and an atomic rename, so an interruption never leaves a half-written file and a
re-run skips the points already there (:class:`PointTable`). The settings that produced the points are
kept beside the CSV as ``NAME.json``; a re-run with other settings is refused instead of mixing results.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Callable, Hashable, Sequence

from prunekit.atomic import atomic_write_csv, atomic_write_text
from prunekit.errors import PrunekitError


def parse_cell(text: str):
    """A CSV cell back as int, float, bool or None (empty) where it parses, else the string."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_csv_rows(path: str | Path) -> list[dict]:
    """The rows of a CSV with a header, cells typed by :func:`parse_cell`."""
    path = Path(path)
    if not path.is_file():
        raise PrunekitError(f"CSV not found: {path}")
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: parse_cell(v) for k, v in row.items()} for row in csv.DictReader(f)]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class PointTable:
    """The rows of ``csv_path``, keyed by ``key(row)``; :meth:`add` appends one and rewrites the file.

    ``settings`` (JSON-serialisable) describe what produced the points; they are saved to the ``.json``
    beside the CSV. Opening a table whose saved settings differ raises :class:`PrunekitError`.
    """

    def __init__(self, csv_path: str | Path, columns: Sequence[str], key: Callable[[dict], Hashable],
                 settings: dict):
        self.path = Path(csv_path)
        self.settings_path = self.path.with_suffix(".json")
        self.columns = list(columns)
        self.key = key
        self.rows: list[dict] = []
        self._check_settings(settings)
        if self.path.exists():
            self.rows = read_csv_rows(self.path)
        atomic_write_text(self.settings_path, json.dumps(settings, indent=2, default=str))

    def _check_settings(self, settings: dict) -> None:
        if not (self.path.exists() and self.settings_path.exists()):
            return
        saved = json.loads(self.settings_path.read_text())
        ignored = {"checkpoint"}  # the same file may be given by another path
        differ = sorted(k for k in set(saved) | set(settings)
                        if k not in ignored and json.dumps(saved.get(k), default=str)
                        != json.dumps(settings.get(k), default=str))
        if differ:
            raise PrunekitError(f"{self.path} holds points computed with other settings ({', '.join(differ)}); "
                                "choose another --out, or delete that file to start over")

    def done(self) -> set:
        return {self.key(row) for row in self.rows}

    def add(self, row: dict) -> None:
        """Record one finished point and rewrite the CSV atomically."""
        self.rows.append(row)
        atomic_write_csv(self.path, self.rows, self.columns)
