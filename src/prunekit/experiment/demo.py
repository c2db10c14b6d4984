"""``prunekit demo``: the embedded recipe on CIFAR-10 (or, offline, on SYNTHETIC data), timed, with a results file.

The demo writes ``RUN/demo.json``: the data it used, the seconds it took, the machine's load, and per model
the test accuracy and costs. ``benchmarks/demo.py`` copies that file to ``benchmarks/results/demo.json``,
which the README quotes and a slow test pins, so the README states what the demo prints.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from prunekit.atomic import atomic_write_text
from prunekit.errors import PrunekitError
from prunekit.experiment.config import load_experiment
from prunekit.experiment.progress import process_seconds
from prunekit.experiment.runner import Run, load_run_data, run_experiment, run_folder
from prunekit.measure.timing import MachineLoad, machine_load

SYNTHETIC_OVERRIDES = ["name=demo-SYNTHETIC", "data.dataset=synthetic", "data.limit_test=500"]  # name: run folder
RESULT_KEYS = ("top1", "top5", "params", "nonzero_params", "macs")  # per model, from compare.json



def demo_busy(load: MachineLoad) -> bool:
    """Whether other work takes so much CPU that the demo (which uses every core) visibly slows down: more
    than half the cores' worth (:meth:`prunekit.measure.MachineLoad.busy` with half the cores free)."""
    return load.busy(threads=max(1, load.cpus // 2))


def load_note(load: MachineLoad) -> str:
    """One line for the user: how loaded the machine is, and what that does to the demo's times."""
    if not demo_busy(load):
        return f"machine quiet: {load.describe()}"
    return (f"machine busy: {load.describe()}; other work is running, so this demo takes longer and its times "
            "are noisier (accuracies only move when it uses fewer threads: sums in another order shift the last "
            "digits); for trustworthy speed numbers rerun on a quiet machine")


def demo_experiment(assignments: list[str], synthetic: bool = False, quick: bool = False):
    """The embedded demo recipe (with its ``quick:`` budget when asked), the SYNTHETIC data overrides (when
    asked), then the ``--set`` ones."""
    recipe = files("prunekit") / "recipes" / "demo.yaml"
    return load_experiment(str(recipe), quick=quick,
                           assignments=[*(SYNTHETIC_OVERRIDES if synthetic else []), *assignments])


def run_demo(data_root: str | None, out: str | Path, assignments: list[str], progress: bool = True,
             quick: bool = False) -> Path:
    """Run the demo; falls back to SYNTHETIC data when CIFAR-10 is not reachable. Prints what it does.

    Side effects: writes the run folder under ``out`` (models, plots, report, ``demo.json``). Returns the
    path of ``demo.json``.
    """
    before = machine_load()  # before the demo starts: its own work is not "other work"
    print(load_note(before), flush=True)
    experiment = demo_experiment(assignments, quick=quick)
    try:
        data = load_run_data(experiment, data_root)
    except PrunekitError as exc:
        print(f"CIFAR-10 is not reachable: {exc}\n"
              "→ running the demo on the SYNTHETIC dataset instead; every number below is synthetic.\n"
              "  To use real data: download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, put it "
              "(or the extracted cifar-10-batches-py/) in a folder and pass --data FOLDER or set PRUNEKIT_DATA.",
              flush=True)
        experiment = demo_experiment(assignments, synthetic=True, quick=quick)
        data = load_run_data(experiment, data_root)
    folder = run_folder(experiment, out)
    report = run_experiment(Run(experiment, folder, data, progress=progress))
    seconds = process_seconds()  # start-up (interpreter, imports) included: what the user waited
    results = demo_results(folder, seconds, before)
    path = atomic_write_text(folder / "demo.json", json.dumps(results, indent=2) + "\n")
    print_summary(results, report, path)
    return path


def demo_results(folder: Path, seconds: float, before: MachineLoad) -> dict:
    """What ``demo.json`` holds: data, time, the machine's load before the demo started, and per model its
    accuracy and costs (from compare.json)."""
    config = json.loads((folder / "compare.json").read_text())
    resolved = _resolved_data(folder)
    models = [{"model": row["model"], **{key: row.get(key) for key in RESULT_KEYS}} for row in config["rows"]]
    return {"dataset": resolved.get("dataset"), "synthetic": bool(resolved.get("synthetic")),
            "train_images": resolved.get("train_images"), "test_images": resolved.get("test_images"),
            "seconds": round(seconds, 1), "machine_before": before.as_dict(), "load_before": before.describe(),
            "cores": before.cpus, "busy": demo_busy(before), "models": models}


def _resolved_data(folder: Path) -> dict:
    import yaml

    return yaml.safe_load((folder / "config.yaml").read_text())["data"]["resolved"]


def print_summary(results: dict, report: Path, path: Path) -> None:
    """The closing lines: every model's test top-1 (marked SYNTHETIC when it is), time and load, files."""
    marker = " SYNTHETIC" if results["synthetic"] else ""
    print(f"\ndemo results ({results['dataset']}{marker}, {results['train_images']} training / "
          f"{results['test_images']} test images):")
    for row in results["models"]:
        print(f"  {row['model']}: test top-1 {row['top1']:.2f}%{marker}")
    busy = "; the machine was busy, so this took longer than on a quiet one" if results["busy"] else ""
    print(f"demo finished in {results['seconds']:.0f} s on {results['cores']} cores (before it started: "
          f"{results['load_before']}{busy}).")
    print(f"Results: {path}\nOpen the report: {report}")
