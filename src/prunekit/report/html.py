"""One page per run folder: a self-contained HTML report and its Markdown twin.

Run-folder layout the report reads (everything optional; ``prunekit run`` writes it, or build it by hand)::

    RUN_DIR/
      config.yaml            the resolved experiment configuration (any *.yaml / *.yml / config.json is shown)
      compare.json           the comparison table (``prunekit compare … --json > compare.json``, or
                             :func:`prunekit.analysis.compare.save_comparison`); when absent it is computed
                             from the checkpoints below and saved here
      *.pt, models/*.pt, models/*/*.pt
                             checkpoints; the dense/unpruned one is the reference of the ratios
                             (``prunekit report --reference CKPT`` to choose)
      plots/NAME.png         every figure (any PNG below RUN_DIR is included, in path order)
      plots/NAME.csv         the numbers behind NAME.png (same stem)
      plots/NAME.json        optional: the settings that produced NAME (sweep / sensitivity write one)
      plots/comparison.png   written by the report from the comparison: every model (int8 too) by size
                             and latency against accuracy
      report.html, report.md written here by ``prunekit report`` (default ``--out``)
      work/.noreport         an empty ``.noreport`` file leaves its folder out (e.g. training rounds)

The page opens with a summary (data, images, hardware, one sentence per model), a table narrow enough
for a 1280 px window (the full table is behind a toggle), then the plots; the configuration is collapsed.
The HTML embeds every image as a base64 PNG data URI and every CSV/JSON as a data-URI download link
(plus a table of the numbers when small), with inline CSS and no script: it opens anywhere, offline,
and can be mailed as one file. The Markdown twin references the same files by relative path.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from prunekit.analysis.compare import Comparison, comparison_from_dict
from prunekit.report.tables import display_rows, summary_rows
from prunekit.atomic import atomic_write_text

COMPARE_FILE = "compare.json"
COMPARISON_PLOT = "plots/comparison.png"
NO_REPORT = ".noreport"  # an empty file: the folder holding it (and everything below) is left out
REPORT_STEM = "report"
CONFIG_PATTERNS = ("*.yaml", "*.yml", "config.json")
MAX_TABLE_ROWS = 200  # CSVs with more rows are linked, not tabled
MAX_EMBEDDED_BYTES = 2_000_000  # larger CSVs are linked by relative path instead of embedded

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1500px;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2rem; }
h3 { font-size: 1rem; font-family: ui-monospace, monospace; }
table { border-collapse: collapse; font-size: .8rem; margin: .5rem 0; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: right; white-space: nowrap; }
th { background: #f0f3f7; white-space: normal; vertical-align: bottom; }
td:first-child, th:first-child { text-align: left; }
.scroll { overflow-x: auto; }
.meta, .method { color: #555; font-size: .85rem; }
.summary { background: #f4f8fc; border: 1px solid #c9d9ea; padding: .5rem 1rem; }
.summary li { margin: .15rem 0; } .noisy { color: #a33; font-weight: bold; }
.synthetic { background: #fff3cd; border: 1px solid #e0c36c; padding: .5rem 1rem; font-weight: bold; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f6f8fa; padding: .75rem; overflow-x: auto; font-size: .8rem; }
"""


@dataclass
class Plot:
    """One figure of the run folder and the files beside it (same stem)."""

    png: Path
    csv: Path | None = None
    settings: Path | None = None


@dataclass
class RunContents:
    """What a report shows: the comparison, the plots and the configuration files of one run folder."""

    run_dir: Path
    comparison: Comparison | None = None
    plots: list[Plot] = field(default_factory=list)
    configs: list[Path] = field(default_factory=list)

    @property
    def synthetic(self) -> bool:
        """True when any measured row or plot was made on synthetic data (the page says so loudly)."""
        rows = self.comparison.rows if self.comparison else []
        settings = [read_json(p.settings) for p in self.plots if p.settings]
        return any(r.get("synthetic") for r in rows) or any(s.get("synthetic") for s in settings
                                                              if isinstance(s, dict))


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def visible_files(run_dir: Path, pattern: str) -> list[Path]:
    """Files matching ``pattern`` anywhere below ``run_dir``, in path order, skipping hidden names and every
    folder that holds a :data:`NO_REPORT` marker (e.g. a run's resumable training state)."""
    excluded = [marker.parent for marker in run_dir.rglob(NO_REPORT)]
    found = [p for p in run_dir.rglob(pattern)
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(run_dir).parts)
             and not any(folder in p.parents for folder in excluded)]
    return sorted(found, key=lambda p: p.relative_to(run_dir).as_posix())


def find_plots(run_dir: Path) -> list[Plot]:
    plots = []
    for png in visible_files(run_dir, "*.png"):
        csv_path, settings = png.with_suffix(".csv"), png.with_suffix(".json")
        plots.append(Plot(png, csv_path if csv_path.is_file() else None, settings if settings.is_file() else None))
    return plots


def find_configs(run_dir: Path, plots: list[Plot]) -> list[Path]:
    """Configuration files below ``run_dir`` (``*.yaml``, ``*.yml``, ``config.json``), not plot settings."""
    sidecars = {p.settings for p in plots if p.settings}
    found = {path for pattern in CONFIG_PATTERNS for path in visible_files(run_dir, pattern)} - sidecars
    return sorted(found, key=lambda p: p.relative_to(run_dir).as_posix())


def find_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints a missing ``compare.json`` is computed from: ``RUN_DIR/*.pt``, ``RUN_DIR/models/*.pt`` and
    ``RUN_DIR/models/<variant>/*.pt``, in path order (the CLI then moves the reference to the front)."""
    run_dir = Path(run_dir)
    models = run_dir / "models"
    return sorted(run_dir.glob("*.pt")) + sorted(models.glob("*.pt")) + sorted(models.glob("*/*.pt"))


def load_comparison(run_dir: str | Path) -> Comparison | None:
    """The comparison saved in ``RUN_DIR/compare.json``, or None when there is none."""
    path = Path(run_dir) / COMPARE_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    if data is None:
        from prunekit.errors import PrunekitError

        raise PrunekitError(f"{path} is not valid JSON; re-create it with `prunekit compare … --json`")
    return comparison_from_dict(data)


def collect(run_dir: str | Path, comparison: Comparison | None = None) -> RunContents:
    """Everything the report shows; ``comparison`` defaults to ``compare.json``."""
    from prunekit.errors import PrunekitError

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PrunekitError(f"run folder not found: {run_dir}")
    plots = find_plots(run_dir)
    return RunContents(run_dir, comparison or load_comparison(run_dir), plots, find_configs(run_dir, plots))


# --- HTML ----------------------------------------------------------------------------------------------


def data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def html_table(rows: list[dict], css_class: str = "") -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell_text(row.get(c)))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    attribute = f' class="{css_class}"' if css_class else ""
    return f'<div class="scroll"><table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def csv_rows(path: Path) -> list[dict] | None:
    """The rows of a CSV with a header, or None when it is large or has no header (e.g. a 0/1 matrix)."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or all(is_number(h) for h in header):
            return None
        rows = []
        for values in reader:
            if len(rows) == MAX_TABLE_ROWS:
                return None
            rows.append(dict(zip(header, values)))
    return rows


def is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def file_link_html(path: Path, run_dir: Path, mime: str) -> str:
    """A download link: embedded as a data URI (self-contained) unless large, then by relative path."""
    name = path.relative_to(run_dir).as_posix()
    if path.stat().st_size <= MAX_EMBEDDED_BYTES:
        return (f'<a download="{html.escape(path.name)}" href="{data_uri(path, mime)}">{html.escape(name)}</a>')
    return f'<a href="{html.escape(name)}">{html.escape(name)}</a> (not embedded: large)'


def plot_html(plot: Plot, run_dir: Path) -> str:
    name = plot.png.relative_to(run_dir).as_posix()
    parts = [f'<section class="plot"><h3>{html.escape(name)}</h3>',
             f'<figure><img src="{data_uri(plot.png, "image/png")}" alt="{html.escape(name)}"></figure>']
    links = []
    if plot.csv:
        links.append("data: " + file_link_html(plot.csv, run_dir, "text/csv"))
    if plot.settings:
        links.append("settings: " + file_link_html(plot.settings, run_dir, "application/json"))
    if links:
        parts.append(f'<p class="meta">{" · ".join(links)}</p>')
    rows = csv_rows(plot.csv) if plot.csv else None
    if rows:
        parts.append(f"<details><summary>the plotted numbers ({len(rows)} rows)</summary>{html_table(rows)}</details>")
    if plot.settings:
        parts.append(f"<details><summary>settings</summary><pre>{html.escape(plot.settings.read_text())}</pre>"
                     "</details>")
    parts.append("</section>")
    return "\n".join(parts)


def times(ratio: float | None, more: str, less: str, same: str) -> str | None:
    """``'3.9× fewer MACs'`` / ``'1.2× more MACs'`` / ``'same MACs'`` for a "first ÷ this" ratio."""
    if ratio is None:
        return None
    if abs(ratio - 1.0) < 0.05:
        return same
    return f"{ratio:.1f}× {more}" if ratio > 1 else f"{1 / ratio:.1f}× {less}"


def model_sentence(row: dict, reference: dict) -> str:
    """One plain sentence comparing ``row`` with the reference row, e.g. ``'3.9× fewer MACs, same weight size,
    4.4× smaller compact file, 2.3× faster at batch 1, −4.5 points top-1'`` (a noisy speed-up says so, naming
    the measurement and the quartiles its IQR comes from)."""
    if row is reference:
        return "the reference every ratio is against" + (f"; its timing is {row['noise']}" if row.get("noise")
                                                          else "")
    parts = [times(row.get("macs_reduction"), "fewer MACs", "more MACs", "same MACs"),
             times(row.get("weights_reduction"), "smaller weights", "larger weights", "same weight size"),
             times(row.get("compact_reduction"), "smaller compact file", "larger compact file",
                   "same compact file size")]
    speed = times(row.get("speedup"), "faster at batch 1", "slower at batch 1", "as fast at batch 1")
    if speed:
        parts.append(speed + (f" ({row['noise']})" if row.get("noise") else ""))
    if row.get("top1") is not None and reference.get("top1") is not None:
        delta = row["top1"] - reference["top1"]
        parts.append(f"{delta:+.1f}".replace("-", "−") + " points top-1")
    if row.get("cut"):
        parts.append(f"cut {row['cut']}")  # the shortfall line when short: it names the blocking ops
    return ", ".join(p for p in parts if p)


def data_line(comparison: Comparison) -> str:
    """``'cifar10 test split, 509 images'`` (``SYNTHETIC`` marked) from the rows."""
    seen = dict.fromkeys((r.get("dataset"), r.get("split"), r.get("images"), bool(r.get("synthetic")))
                         for r in comparison.rows)
    return "; ".join(f"{d} {s} split, {n:,} images" + (" (SYNTHETIC)" if syn else "")
                     for d, s, n, syn in seen if n is not None) or "unknown"


def hardware_line(comparison: Comparison) -> str:
    s = comparison.settings
    if not s.timing:
        return f"{comparison.hardware or s.device} (timing skipped)"
    text = (f"{comparison.hardware or s.device}, timed on {', '.join(s.devices)} in {', '.join(s.runtimes)} with "
            f"{comparison.threads} thread(s)")
    missing = [f"{d}: {why}" for d, why in (comparison.unavailable or {}).items()]
    return text + (f" ({'; '.join(missing)})" if missing else "")


def summary_html(comparison: Comparison) -> str:
    """The block at the top: data, hardware, timing warnings and one sentence per model."""
    rows = comparison.rows
    items = [f"<li><b>{html.escape(str(r['model']))}</b>: {html.escape(model_sentence(r, rows[0]))}</li>"
             for r in rows]
    busy = comparison.warnings()[:1] if comparison.busy else []  # per-row noise is in the sentences
    warnings = "".join(f'<p class="noisy">{html.escape(line)}</p>' for line in busy + comparison.flagged())
    return (f'<div class="summary"><p><b>Data:</b> {html.escape(data_line(comparison))} · '
            f"<b>Hardware:</b> {html.escape(hardware_line(comparison))}</p><ul>{''.join(items)}</ul>"
            f"{warnings}</div>")


def comparison_html(comparison: Comparison) -> str:
    """The narrow table (fits 1280 px), the full table behind a toggle, and the method text."""
    return (html_table(summary_rows(comparison), "compare")
            + "<details><summary>full table (every column)</summary>"
            + html_table(display_rows(comparison), "compare") + "</details>"
            + f'<p class="method">{html.escape(comparison.method)}</p>')


def render_html(contents: RunContents) -> str:
    """The whole page as one string: inline CSS, images and data embedded, no script, no external asset."""
    from prunekit import __version__

    run_dir = contents.run_dir
    title = f"prunekit report: {run_dir.resolve().name}"
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="meta">folder {html.escape(str(run_dir))} · generated {time.strftime("%Y-%m-%d %H:%M")} '
            f"· prunekit {__version__}</p>"]
    if contents.synthetic:
        body.append('<p class="synthetic">SYNTHETIC data: these numbers come from the generated synthetic '
                    "dataset, not CIFAR; they demonstrate the tool, not a result.</p>")
    has_rows = bool(contents.comparison and contents.comparison.rows)
    if has_rows:
        body += ["<h2>Summary</h2>", summary_html(contents.comparison)]
    body.append("<h2>Comparison</h2>")
    body.append(comparison_html(contents.comparison) if has_rows
                else f'<p class="meta">no {COMPARE_FILE} and no checkpoint in this folder</p>')
    body.append("<h2>Plots</h2>")
    body += [plot_html(plot, run_dir) for plot in contents.plots] or ['<p class="meta">no PNG in this folder</p>']
    body.append("<h2>Configuration</h2>")
    body += [f"<details><summary>{html.escape(p.relative_to(run_dir).as_posix())}</summary>"
             f"<pre>{html.escape(p.read_text())}</pre></details>"
             for p in contents.configs] or ['<p class="meta">no configuration file in this folder</p>']
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# --- Markdown ------------------------------------------------------------------------------------------


def render_markdown(contents: RunContents, md_path: Path) -> str:
    """The Markdown twin: the same sections, images and files referenced relative to ``md_path``."""
    from prunekit.report.tables import markdown_table

    run_dir = contents.run_dir

    def link(path: Path) -> str:
        return Path(os.path.relpath(path, md_path.parent)).as_posix()

    lines = [f"# prunekit report: {run_dir.resolve().name}", ""]
    if contents.synthetic:
        lines += ["> **SYNTHETIC data**: these numbers come from the generated synthetic dataset, not CIFAR.", ""]
    if contents.comparison and contents.comparison.rows:
        comparison = contents.comparison
        lines += ["## Summary", "", f"Data: {data_line(comparison)}. Hardware: {hardware_line(comparison)}.", ""]
        lines += [f"- **{r['model']}**: {model_sentence(r, comparison.rows[0])}" for r in comparison.rows]
        lines += [""] + [f"> WARNING {line}" for line in comparison.warnings()] + [""]
    lines += ["## Comparison", ""]
    if contents.comparison and contents.comparison.rows:
        lines += [markdown_table(display_rows(contents.comparison)), "", contents.comparison.method, ""]
    else:
        lines += [f"No {COMPARE_FILE} and no checkpoint in this folder.", ""]
    lines += ["## Plots", ""]
    for plot in contents.plots:
        name = plot.png.relative_to(run_dir).as_posix()
        lines += [f"### {name}", "", f"![{name}]({link(plot.png)})", ""]
        files = [f"data: [{plot.csv.name}]({link(plot.csv)})"] if plot.csv else []
        files += [f"settings: [{plot.settings.name}]({link(plot.settings)})"] if plot.settings else []
        lines += [" · ".join(files), ""] if files else []
    lines += ["## Configuration", ""]
    for path in contents.configs:
        fence = "yaml" if path.suffix in (".yaml", ".yml") else "json"
        lines += [f"### {path.relative_to(run_dir).as_posix()}", "", f"```{fence}", path.read_text().rstrip(),
                  "```", ""]
    return "\n".join(lines)


def write_report(run_dir: str | Path, out: str | Path | None = None,
                 comparison: Comparison | None = None) -> tuple[Path, Path]:
    """Write ``out`` (default ``RUN_DIR/report.html``) and its Markdown twin (same stem, ``.md``).

    ``comparison`` defaults to the folder's ``compare.json`` (the CLI computes and saves one when missing).
    Side effect: also writes ``RUN_DIR/plots/comparison.png`` (+ CSV) from the comparison, which the page
    shows. Returns ``(html_path, md_path)``.
    """
    write_comparison_plot(run_dir, comparison or load_comparison(run_dir))
    contents = collect(run_dir, comparison)
    html_path = Path(out) if out else contents.run_dir / f"{REPORT_STEM}.html"
    if html_path.suffix.lower() not in (".html", ".htm"):
        html_path = html_path.with_name(html_path.name + ".html")
    md_path = html_path.with_suffix(".md")
    atomic_write_text(html_path, render_html(contents))
    atomic_write_text(md_path, render_markdown(contents, md_path))
    return html_path, md_path


def write_comparison_plot(run_dir: str | Path, comparison: Comparison | None) -> Path | None:
    """``RUN_DIR/plots/comparison.png`` (+ CSV): every compared model, int8 and exported ones included, by
    deployable weights and batch-1 latency against top-1; None when there is no comparison."""
    from prunekit.report.plots import plot_comparison

    if comparison is None or not comparison.rows:
        return None
    rows = [{"label": r.get("model"), "top1": r.get("top1"), "weights_bytes": r.get("weights_bytes"),
             "latency_ms": r.get("latency_ms"), "speedup": r.get("speedup"), "noisy": bool(r.get("noise"))}
            for r in comparison.rows]
    first = comparison.rows[0]
    title = (f"{first.get('arch') or 'model'} on {data_line(comparison)}: every compared model "
             f"({len(rows)}), reference {first.get('model')}")
    png, _ = plot_comparison(rows, Path(run_dir) / COMPARISON_PLOT, title=title)
    return png
