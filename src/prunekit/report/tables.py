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


#: Terminal/HTML columns: (heading, row key, formatter name).
DISPLAY_COLUMNS = [
    ("model", "model", "text"), ("top-1 %", "top1", "pct"), ("top-5 %", "top5", "pct"),
    ("top-1 err %", "top1_error", "pct"), ("params", "params", "int"), ("non-zero", "nonzero_params", "int"),
    ("MACs", "macs", "count"), ("file", "file_bytes", "bytes"), ("compact", "compact_bytes", "bytes"),
    ("peak mem", "peak_memory_bytes", "bytes"), ("latency ms [IQR]", "latency_ms", "latency"),
    ("img/s", "throughput_ips", "rate"), ("speed-up", "speedup", "ratio"),
    ("non-zero ÷", "nonzero_reduction", "ratio"), ("MACs ÷", "macs_reduction", "ratio"),
    ("file ÷", "file_reduction", "ratio"), ("compact ÷", "compact_reduction", "ratio"),
    ("mem ÷", "memory_reduction", "ratio"),
]



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


def format_cell(row: dict, key: str, kind: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if kind == "pct":
        return f"{value:.2f}"
    if kind == "int":
        return f"{value:,}"
    if kind == "count":
        return format_count(value)
    if kind == "bytes":
        return format_bytes(value)
    if kind == "latency":
        q1, q3 = row.get("latency_q1_ms"), row.get("latency_q3_ms")
        return f"{value:.3f} [{q1:.3f}–{q3:.3f}]" if q1 is not None else f"{value:.3f}"
    if kind == "rate":
        return f"{value:,.0f}"
    if kind == "ratio":
        return f"{value:.2f}×"
    return str(value)


def display_rows(comparison: Comparison) -> list[dict]:
    """Rows of formatted strings under the :data:`DISPLAY_COLUMNS` headings (terminal, Markdown, HTML).

    Columns that are empty for every row (e.g. timing when skipped) are left out.
    """
    batch = comparison.settings.batch_size
    columns = [(h.replace("img/s", f"img/s @{batch}"), k, kind) for h, k, kind in DISPLAY_COLUMNS]
    columns = [c for c in columns if any(row.get(c[1]) is not None for row in comparison.rows)]
    return [{heading: format_cell(row, key, kind) for heading, key, kind in columns} for row in comparison.rows]

