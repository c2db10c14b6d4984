"""Plain-text tables: the Markdown the CLI prints and the reports embed, and the formatted rows of a
:class:`prunekit.analysis.compare.Comparison` (no heavy imports)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from prunekit.analysis.compare import Comparison


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as a Markdown table (floats with 4 significant decimals at most)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


#: Terminal/HTML columns: (heading, row key, formatter name). Timing columns (:data:`TIMING_COLUMNS`) are
#: inserted after ``peak mem``, once per device.
DISPLAY_COLUMNS = [
    ("model", "model", "text"), ("top-1 %", "top1", "pct"), ("top-1 err %", "top1_error", "pct"),
    ("top-5 err %", "top5_error", "pct"), ("params", "params", "int"), ("non-zero", "nonzero_params", "int"),
    ("MACs", "macs", "count"), ("file", "file_bytes", "bytes"), ("weights", "weights_bytes", "bytes"),
    ("compact", "compact_bytes", "bytes"), ("peak mem", "peak_memory_bytes", "bytes"),
    ("non-zero ÷", "nonzero_reduction", "ratio"), ("MACs ÷", "macs_reduction", "ratio"),
    ("weights ÷", "weights_reduction", "ratio"), ("file ÷", "file_reduction", "ratio"),
    ("compact ÷", "compact_reduction", "ratio"), ("mem ÷", "memory_reduction", "ratio"),
]
TIMING_COLUMNS = [("latency ms [IQR]", "latency_ms", "latency"), ("img/s", "throughput_ips", "rate"),
                  ("speed-up", "speedup", "speedup"), ("efficiency", "efficiency", "ratio")]
#: The narrow table that fits a 1280 px page (the report's first table; the full one follows).
SUMMARY_COLUMNS = [("model", "model", "text"), ("top-1 %", "top1", "pct"), ("Δ top-1", "top1_delta", "points"),
                   ("MACs", "macs", "count"), ("MACs ÷", "macs_reduction", "ratio"), ("weights", "weights_bytes", "bytes"),
                   ("weights ÷", "weights_reduction", "ratio"), ("compact ÷", "compact_reduction", "ratio")]
NOISY_MARK = "noisy"
#: Beside the speed-up of a model measured slower than the first one (never hidden).
SLOWER_MARK = "SLOWER"
#: In the timing cells of a model the runtime could not run (the reason is in the warnings under the table).
UNTIMED_MARK = "not run"


def format_bytes(n: int | None) -> str:
    if n is None:
        return ""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def format_count(n: int | None) -> str:
    if n is None:
        return ""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return str(n)


def format_cell(row: dict, key: str, kind: str, unavailable: str | None = None) -> str:
    """``row[key]`` formatted as ``kind``; ``unavailable`` (e.g. "no GPU") stands in for a missing timing."""
    value = row.get(key)
    if value is None:
        return unavailable or ""
    if kind == "pct":
        return f"{value:.2f}"
    if kind == "points":
        return f"{value:+.2f}".replace("-", "−")
    if kind == "int":
        return f"{value:,}"
    if kind == "count":
        return format_count(value)
    if kind == "bytes":
        return format_bytes(value)
    if kind == "latency":
        suffix = key.removeprefix("latency_ms")
        q1, q3 = row.get(f"latency_q1_ms{suffix}"), row.get(f"latency_q3_ms{suffix}")
        text = f"{value:.3f} [{q1:.3f}–{q3:.3f}]" if q1 is not None else f"{value:.3f}"
        return text + (f" {NOISY_MARK}" if row.get(f"noise{suffix}") else "")
    if kind == "speedup":
        suffix = key.removeprefix("speedup")
        q1, q3 = row.get(f"speedup_q1{suffix}"), row.get(f"speedup_q3{suffix}")
        text = f"{value:.2f}× [{q1:.2f}–{q3:.2f}]" if q1 is not None and q3 is not None else f"{value:.2f}×"
        marks = [mark for mark, flag in ((SLOWER_MARK, "slower"), (NOISY_MARK, "noise")) if row.get(flag + suffix)]
        return " ".join([text, *marks])
    if kind == "rate":
        return f"{value:,.0f}"
    if kind == "ratio":
        return f"{value:.2f}×"
    return str(value)


def table_columns(comparison: Comparison, base=DISPLAY_COLUMNS) -> list[tuple[str, str, str]]:
    """``base`` with the timing columns of every timed runtime × device (``settings.targets``) inserted after
    ``peak mem`` (summary: after ``MACs ÷``); headings carry the runtime / device when there are several."""
    s = comparison.settings
    targets = s.targets if s.timing else []
    timing = []
    for target in targets:
        tag = f" {target.tag}" if target.tag else ""
        suffix = target.suffix if len(targets) > 1 else ""
        timing += [(h.replace("img/s", f"img/s @{s.batch_size}") + tag, k + suffix, kind)
                   for h, k, kind in TIMING_COLUMNS]
    anchor = next(i for i, c in enumerate(base) if c[0] in ("peak mem", "MACs ÷")) + 1
    return list(base[:anchor]) + timing + list(base[anchor:])


def display_rows(comparison: Comparison, base=DISPLAY_COLUMNS) -> list[dict]:
    """Rows of formatted strings under the :data:`DISPLAY_COLUMNS` headings (terminal, Markdown, HTML), a
    latency / throughput / speed-up column per timed device ("no GPU" where CUDA was absent) and the mark
    ``noisy`` beside every latency and speed-up whose IQR exceeds 20% of its median.

    Columns that are empty for every row (e.g. the compact size of int8-only tables) are left out.
    """
    columns = table_columns(comparison, base)
    unavailable = comparison.unavailable or {}
    first_top1 = comparison.rows[0].get("top1") if comparison.rows else None

    timed_keys = {k for _, k, _ in TIMING_COLUMNS}
    first = comparison.settings.targets[0].suffix[1:]

    def missing(key: str) -> str | None:
        return next((why for where, why in unavailable.items() if key.endswith(f"_{where}")
                     or (key in timed_keys and where == first)), None)

    def untimed(row: dict, key: str) -> str | None:
        base = next((k for k in timed_keys if key.startswith(k)), None)
        return UNTIMED_MARK if base and row.get("untimed" + key.removeprefix(base)) else None

    rows = [{**row, "top1_delta": row["top1"] - first_top1 if None not in (row.get("top1"), first_top1) else None}
            for row in comparison.rows]
    columns = [c for c in columns if any(row.get(c[1]) is not None for row in rows) or missing(c[1])]
    return [{heading: format_cell(row, key, kind, missing(key) or untimed(row, key)) for heading, key, kind in columns}
            for row in rows]


def summary_rows(comparison: Comparison) -> list[dict]:
    """The narrow table (:data:`SUMMARY_COLUMNS` plus batch-1 latency and speed-up per device)."""
    return display_rows(comparison, SUMMARY_COLUMNS)


TERMINAL_WIDTH = 100  # characters a terminal `compare` table may take by default (`--wide`: every column)
#: Row keys (device suffix removed) by importance: the terminal table keeps the first ones that fit.
TERMINAL_PRIORITY = ["model", "top1", "speedup", "latency_ms", "macs_reduction", "weights_bytes", "compact_bytes",
                     "nonzero_params", "macs", "weights_reduction", "compact_reduction", "params", "throughput_ips",
                     "top1_error", "top5_error", "file_bytes", "nonzero_reduction", "file_reduction",
                     "peak_memory_bytes", "memory_reduction"]


def markdown_width(rows: Sequence[dict], columns: Sequence[str]) -> int:
    """Characters of the longest line :func:`markdown_table` prints for ``rows`` (formatted strings) and
    ``columns``."""
    lines = [list(columns)] + [[str(row.get(c, "")) for c in columns] for row in rows]
    return max(sum(len(cell) for cell in line) + 3 * len(columns) + 1 for line in lines)


def terminal_rows(comparison: Comparison, width: int = TERMINAL_WIDTH) -> tuple[list[dict], list[str]]:
    """The :func:`display_rows` columns that fit ``width`` characters, most important first
    (:data:`TERMINAL_PRIORITY`; the model and its top-1 always), in the full table's order; and the headings
    left out."""
    rows = display_rows(comparison)
    if not rows:
        return rows, []
    keys = {heading: key for heading, key, _ in table_columns(comparison)}
    suffixes = [target.suffix for target in comparison.settings.targets] if comparison.settings.timing else []

    def rank(heading: str) -> tuple[int, int]:
        """Priority of the column's key without its timing suffix, then its runtime/device (first ones first)."""
        key = keys.get(heading, heading)
        target = next((i for i, suffix in enumerate(suffixes) if key.endswith(suffix)), 0)
        for suffix in suffixes:
            key = key.removesuffix(suffix)
        return TERMINAL_PRIORITY.index(key) if key in TERMINAL_PRIORITY else len(TERMINAL_PRIORITY), target

    headings = list(rows[0])
    chosen: list[str] = []
    for heading in sorted(headings, key=rank):
        trial = [h for h in headings if h in chosen or h == heading]
        if len(chosen) < 2 or markdown_width(rows, trial) <= width:
            chosen = trial
    return [{h: row[h] for h in chosen} for row in rows], [h for h in headings if h not in chosen]
