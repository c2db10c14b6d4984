"""Replicates over seeds: one run folder per seed, then mean ± std of each model's accuracy."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from prunekit.errors import PrunekitError
from prunekit.experiment.config import Experiment
from prunekit.experiment.runner import Run, load_run_data, run_experiment, run_folder
from prunekit.atomic import atomic_write_text


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise PrunekitError(f"--seeds {text!r}: give integers separated by commas, e.g. 1,2,3") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise PrunekitError(f"--seeds {text!r}: give distinct integers, e.g. 1,2,3")
    return seeds


def run_seeds(experiment: Experiment, seeds: list[int], data_root: str | None = None, out: str | Path = "runs",
              progress: bool = True) -> list[Path]:
    """Run ``experiment`` once per seed; with several seeds also write a summary folder. Returns run folders.
    Each run folder is locked before its data loads, so a second writer fails at once."""
    from prunekit.lock import run_lock

    folders = []
    for seed in seeds:
        replicate = experiment.model_copy(update={"seed": seed})
        folder = run_folder(replicate, out)
        with run_lock(folder, f"prunekit run {replicate.name}"):  # run_experiment takes it again (re-entrant)
            run_experiment(Run(replicate, folder, load_run_data(replicate, data_root), progress))
        folders.append(folder)
    if len(seeds) > 1:
        summarise(experiment, seeds, folders, Path(out) / f"{experiment.name}-seeds-{'_'.join(map(str, seeds))}")
    return folders


def summarise(experiment: Experiment, seeds: list[int], folders: list[Path], summary_dir: Path) -> Path:
    """``summary_dir/plots/seeds_top1.png`` + ``.csv`` (mean ± std per model) and a report of them."""
    from prunekit.report.html import write_report

    tables = [json.loads((folder / "compare.json").read_text())["rows"] for folder in folders]
    rows = []
    for position, first in enumerate(tables[0]):
        name = seed_label(first)
        labels = {seed_label(table[position]) for table in tables}
        if labels != {name}:
            raise PrunekitError(f"seed runs list different models at row {position + 1}: {sorted(labels)}")
        row = {"model": name, "seeds": len(seeds)}
        for key in ("top1", "top5"):
            values = [table[position][key] for table in tables]
            row.update({f"{key}_mean": statistics.mean(values), f"{key}_std": statistics.stdev(values)})
        for key in ("params", "nonzero_params", "macs"):  # mean over seeds (equal for every seed in practice)
            row[key] = statistics.mean(table[position][key] for table in tables)
        row["cut"] = seeds_cut([table[position] for table in tables])
        rows.append(row)
    plot_seed_summary(rows, summary_dir / "plots" / "seeds_top1.png",
                      title=f"{experiment.name}: test top-1 over seeds {', '.join(map(str, seeds))} (mean ± std)")
    atomic_write_text(summary_dir / "runs.json", json.dumps({"seeds": seeds, "runs": [str(f) for f in folders]},
                                                            indent=2))
    html, _ = write_report(summary_dir)
    print(f"[{experiment.name}] seeds {seeds}: summary report {html}")
    for row in rows:
        print(f"  {row['model']}: top-1 {row['top1_mean']:.2f} ± {row['top1_std']:.2f}%"
              + (f"; cut {row['cut']}" if row["cut"] else ""))
    return summary_dir


def seeds_cut(rows: list[dict]) -> str | None:
    """One model's structured cut over the seeds' compare rows: its asked vs achieved line (the shortfall
    line when it fell short), each distinct one once, joined by `` | ``; None for a model without a cut."""
    lines = dict.fromkeys(row.get("cut") for row in rows)
    return " | ".join(line for line in lines if line) or None


def seed_label(row: dict) -> str:
    """A compare row's name across seeds: its variant (:func:`prunekit.paths.variant_of`), else
    :func:`model_label` of its file name."""
    from prunekit.paths import variant_of

    return variant_of(row["path"]) if row.get("path") else model_label(row["model"])


def model_label(file_name: str) -> str:
    """A model's name across seeds: a run's checkpoint file name without the one seed's accuracy, variant name
    kept (``l1-50__Omp_filter_0.50_acc_91.52_int8.pt`` → ``l1-50_int8``, ``ft_acc_90.10.pt`` → ``ft``)."""
    label = re.sub(r"_acc_\d+(\.\d+)?", "", file_name.removesuffix(".pt"))
    if "__" in label:
        variant, _, rest = label.partition("__")
        label = variant + ("_int8" if rest.endswith("_int8") else "")
    return label


def plot_seed_summary(rows: list[dict], out: Path, title: str) -> None:
    """Bar chart of mean top-1 with ± std error bars per model; the rows go to a CSV beside it."""
    from prunekit.atomic import atomic_write_csv
    from prunekit.report.plots import new_figure, output_paths, save_png

    png, csv_path = output_paths(out)
    atomic_write_csv(csv_path, rows, list(rows[0]))
    figure = new_figure(6.4, 4.0)
    ax = figure.add_subplot()
    ax.bar([r["model"] for r in rows], [r["top1_mean"] for r in rows], yerr=[r["top1_std"] for r in rows],
           capsize=6, color="#4c72b0")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelrotation=20)
    save_png(figure, png, 150)
