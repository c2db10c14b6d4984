"""``prunekit run``: baseline → variants (prune / fine-tune / quantize) → sweeps → plots → compare → report.

Every stage writes into the run folder and leaves a file that marks it finished; re-running skips
finished stages and resumes an interrupted one (training from its ``last.pt``, pruning rounds from
theirs, sweeps from their CSV). Layout::

    RUN/config.yaml                 the resolved experiment (written first)
    RUN/models/00_baseline.pt       the baseline
    RUN/models/<variant>/*.pt       a variant's checkpoint under the pipeline's own name (and its int8 file)
    RUN/models/<variant>.json       a variant's result record: its checkpoint and numbers, a structured cut's
                                    asked vs achieved (``cut``) (stage marker)
    RUN/plots/*.png + *.csv         accuracy-sparsity, masks, sweeps
    RUN/compare.json/.md/.csv       the comparison table
    RUN/report.html, RUN/report.md  the report
    RUN/work/                       training and pruning rounds (resumable state; left out of reports)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

import prunekit.paths as names
from prunekit.checkpoint import (Checkpoint, check_classes, derived_meta, load_checkpoint, resume_point,
                                 save_checkpoint)
from prunekit.config import FINETUNE_LR, TrainConfig
from prunekit.experiment.progress import Sizes, StageClock, plan_stages
from prunekit.train.callbacks import PrintEpoch
from prunekit.data import DataBundle, get_data
from prunekit.data.normalisation import input_normalisation
from prunekit.foreign import load_weights
from prunekit.experiment.config import Experiment, SweepSpec, VariantSpec
from prunekit.models import arch_label
from prunekit.analysis.points import accuracy_point, weight_counts
from prunekit.atomic import atomic_write_text

BASELINE = names.BASELINE


@dataclass
class Run:
    """One experiment in one folder, with the data it reads."""

    experiment: Experiment
    folder: Path
    data: DataBundle
    progress: bool = True
    clock: StageClock | None = None  # stage numbers and time left (set by run_stages)

    @property
    def models(self) -> Path:
        return names.models(self.folder)

    @property
    def work(self) -> Path:
        return names.work(self.folder)

    def say(self, text: str) -> None:
        print(f"[{self.experiment.name}] {text}", flush=True)

    def epoch_callbacks(self) -> list:
        """Per training epoch: its metrics line (marked SYNTHETIC when it is), then the stage clock's line."""
        return [PrintEpoch(synthetic_note(self))] + ([self.clock.epoch_callback()] if self.clock else [])


def run_folder(experiment: Experiment, root: str | Path = "runs") -> Path:
    """``root/NAME-HASH``: the hash of the resolved configuration, so a changed config gets a new folder
    (``strict`` changes no result, so a strict re-run reuses the folder)."""
    text = json.dumps(experiment.model_dump(mode="json", exclude={"quick", "description", "strict"}), sort_keys=True)
    return Path(root) / f"{experiment.name}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def load_run_data(experiment: Experiment, root: str | None = None) -> DataBundle:
    spec = experiment.data
    return get_data(spec.dataset, root=spec.root or root, val_split=spec.val_split, seed=experiment.seed,
                    limit_train=spec.limit_train, limit_test=spec.limit_test)


def run_experiment(run: Run) -> Path:
    """Run every stage that is not finished yet, holding the folder's run lock (:mod:`prunekit.lock`) all
    along; returns the HTML report's path."""
    from prunekit.lock import run_lock

    with run_lock(run.folder, f"prunekit run {run.experiment.name}"):
        return run_stages(run)


def run_stages(run: Run) -> Path:
    """Every stage in order, each announced with its number and the time left (:class:`StageClock`)."""
    run.folder.mkdir(parents=True, exist_ok=True)
    write_config(run)
    sizes = data_sizes(run.data)
    run.clock = clock = StageClock(plan_stages(run.experiment, sizes), sizes, run.say)
    clock.begin(0)
    baseline = ensure_baseline(run)
    paths = [baseline]
    for variant in run.experiment.variants:
        clock.begin(clock.current + 1)
        paths += ensure_variant(run, variant)
    for sweep in run.experiment.sweeps:
        clock.begin(clock.current + 1)
        ensure_sweep(run, sweep)
    clock.begin(clock.current + 1)
    write_plots(run, paths)
    ensure_comparison(run, paths)
    from prunekit.report.html import write_report

    clock.begin(clock.current + 1)
    html, _ = write_report(run.folder)
    run.say(f"report: {html}")
    return html


def data_sizes(data: DataBundle) -> Sizes:
    """Images trained on and evaluated per epoch (the validation split when there is one), and test images."""
    test = len(data.test[1])
    return Sizes(len(data.train[1]), len(data.val[1]) if data.val is not None else test, test)


def write_config(run: Run) -> None:
    resolved = run.experiment.model_dump(mode="json", exclude={"quick"})
    resolved["data"]["resolved"] = {"dataset": run.data.info.name, "synthetic": run.data.synthetic,
                                    "train_images": len(run.data.train[1]), "test_images": len(run.data.test[1])}
    atomic_write_text(run.folder / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    (run.work).mkdir(parents=True, exist_ok=True)
    (run.work / ".noreport").touch()


# --- stages ----------------------------------------------------------------------------------------------

def ensure_baseline(run: Run) -> Path:
    """The baseline checkpoint: trained (resuming ``work/baseline/last.pt``), or loaded from a file."""
    path = names.baseline(run.folder)
    if path.exists():
        run.say(f"baseline: done ({path})")
        return path
    spec = run.experiment.baseline
    meta = data_meta(run.data)
    if spec.checkpoint:
        loaded = load_checkpoint(spec.checkpoint)
        check_classes(loaded, run.data, f"baseline.checkpoint {spec.checkpoint}")
        model, meta = loaded.model, {**meta, **loaded.meta}
    else:
        from prunekit.models import resolve_model

        torch.manual_seed(run.experiment.seed)
        model = resolve_model(spec.model, run.data.info.num_classes, spec.model_kwargs)
        if spec.weights:
            load_weights(model, spec.weights)
            meta.update(foreign_normalisation(spec.normalize, run.data), weights=spec.weights)
        else:
            model = train_baseline(run, model, spec.train.model_copy(update={"seed": run.experiment.seed}), meta)
    metrics = evaluate(run, model, meta)
    save_checkpoint(model, path, {**meta, **metrics, "stage": "baseline"})
    run.say(f"baseline: top-1 {metrics['test_top1']:.2f}% on {metrics['test_images']} test images → {path}")
    return path


def train_baseline(run: Run, model, config: TrainConfig, meta: dict):
    from prunekit.train import fit

    folder = run.work / "baseline"
    resume = resume_point(folder)
    if resume:
        model = resume.model
    run.say(f"baseline: training {run.experiment.baseline.model} for {config.epochs} epochs"
            + (f" (resuming after epoch {resume.train_state['epoch']})" if resume else ""))
    fit(model, run.data, config, run_dir=folder, resume=resume.train_state if resume else None, meta=meta,
        callbacks=run.epoch_callbacks(), progress=run.progress)
    return model


def ensure_variant(run: Run, variant: VariantSpec) -> list[Path]:
    """Prune and/or fine-tune ``variant.source``; returns the variant's checkpoint (and int8 file)."""
    record_path = names.variant_record(run.folder, variant.name)
    if record_path.exists():
        record = json.loads(record_path.read_text())
        run.say(f"variant {variant.name}: done ({record['path']})")
        return [Path(p) for p in record["paths"]]
    source = load_checkpoint(source_path(run, variant.source))
    model, meta, path = source.model, derived_meta(source.meta), None
    if variant.prune is not None:
        model, meta, path = prune_variant(run, variant, model, meta)
    if variant.binarize is not None:
        model, meta, path = binarize_variant(run, variant, model, meta)
    if variant.finetune is not None:
        model, meta, path = finetune_variant(run, variant, model, meta)
    if path is None:  # quantize only
        path = source_path(run, variant.source)
    paths = [path]
    if variant.quantize is not None:
        paths.append(quantize_variant(run, variant, path))
    record = {"name": variant.name, "path": str(path), "paths": [str(p) for p in paths],
              "test_top1": meta.get("test_top1"), "cut": meta.get("cut")}
    atomic_write_text(record_path, json.dumps(record, indent=2))
    return paths


def prune_variant(run: Run, variant: VariantSpec, model, meta: dict):
    from prunekit.pipeline import run_pruning
    from prunekit.prune.allocate import load_ratio_file

    config = variant.prune
    if variant.ratios_file:
        config = config.model_copy(update={"ratios": {**load_ratio_file(variant.ratios_file), **(config.ratios or {})}})
    config = config.model_copy(update={"seed": run.experiment.seed})
    train = retrain_config(run, variant.retrain)
    run.say(f"variant {variant.name}: {config.schedule} {config.granularity} pruning from {variant.source}")
    result = run_pruning(model, run.data, config, train, run.work / variant.name, meta=meta,
                         progress=run.progress, callbacks=run.epoch_callbacks(), strict=run.experiment.strict)
    if result.outcome:
        run.say(f"variant {variant.name}: {result.outcome.line()}")
    return result.model, result.meta, into_variant_folder(run, variant, result.path)


def into_variant_folder(run: Run, variant: VariantSpec, path: Path) -> Path:
    """Move a stage's result file, keeping its exact name, into ``RUN/models/<variant>/``; returns where."""
    final = names.variant_dir(run.folder, variant.name) / path.name
    final.parent.mkdir(parents=True, exist_ok=True)
    path.replace(final)
    return final


def binarize_variant(run: Run, variant: VariantSpec, model, meta: dict):
    from prunekit.pipeline import run_binarization

    config = variant.binarize
    run.say(f"variant {variant.name}: {config.method} binarization, {config.finetune_epochs} STE epoch(s)")
    result = run_binarization(model, run.data, config, retrain_config(run, variant.retrain),
                              run.work / f"{variant.name}_binarize", meta=meta, progress=run.progress,
                              callbacks=run.epoch_callbacks())
    return result.model, result.meta, into_variant_folder(run, variant, result.path)


def finetune_variant(run: Run, variant: VariantSpec, model, meta: dict):
    from prunekit.pipeline import finetune

    folder = run.work / f"{variant.name}_finetune"
    resume = resume_point(folder)
    if resume:
        model = resume.model
    config = variant.finetune.model_copy(update={"seed": run.experiment.seed})
    run.say(f"variant {variant.name}: fine-tuning {config.epochs} epochs"
            + (f" (resuming after epoch {resume.train_state['epoch']})" if resume else ""))
    teacher = load_checkpoint(source_path(run, variant.source)).model if config.distill else None  # dense source
    outcome = finetune(model, run.data, config, folder, resume=resume.train_state if resume else None,
                       meta=meta, progress=run.progress, callbacks=run.epoch_callbacks(), teacher=teacher)
    test = outcome["test"]
    meta = {**meta, "test_top1": test.top1, "test_top5": test.top5, "test_images": test.images,
            "finetune_epochs": config.epochs, "sparsity": outcome["sparsity"]["overall"]}
    final = names.variant_dir(run.folder, variant.name) / f"{variant.name}_acc_{test.top1:.2f}.pt"
    save_checkpoint(model, final, {**meta, "stage": variant.name})
    return model, meta, final


def quantize_variant(run: Run, variant: VariantSpec, path: Path) -> Path:
    from prunekit.data import DeviceLoader
    from prunekit.export.quantize import quantize_model, save_quantized

    loaded = load_checkpoint(path)
    mean, std = input_normalisation(loaded.meta, run.data.info)
    spec = variant.quantize
    calibration = DeviceLoader(*run.data.train, spec.batch_size, mean=mean, std=std, train=False)
    quantized = quantize_model(loaded.model, calibration, max_batches=spec.calib_batches)
    out = names.variant_dir(run.folder, variant.name) / f"{path.stem}_int8.pt"
    save_quantized(quantized, out, {**derived_meta(loaded.meta), "quantized": "int8",
                                    "calib_batches": spec.calib_batches})
    run.say(f"variant {variant.name}: int8 → {out}")
    return out


def ensure_sweep(run: Run, sweep: SweepSpec) -> None:
    from prunekit.report.plots import plot_sweep
    from prunekit.analysis.points import Evaluator
    from prunekit.analysis.sweep import run_sweep, sweep_name, sweep_rates

    loaded = load_checkpoint(source_path(run, sweep.source))
    mean, std = input_normalisation(loaded.meta, run.data.info)
    evaluator = Evaluator(run.data, tuple(mean), tuple(std), torch.device("cpu"))
    ranges = [(sweep.start, sweep.stop)] + ([tuple(sweep.zoom)] if sweep.zoom else [])
    dense_top1 = loaded.meta.get("test_top1")  # the zoomed range has no rate-0 point of its own
    model_name = arch_label(loaded.arch)
    for start, stop in ranges:
        stem = f"{sweep.source}_{sweep_name(sweep.granularity, sweep.scope, start, stop)}"
        csv_path = names.plots(run.folder) / f"{stem}.csv"
        rows = run_sweep(loaded.model, sweep_rates(start, stop, sweep.steps), evaluator, csv_path,
                         granularity=sweep.granularity, scope=sweep.scope, progress=run.progress)
        dense_top1 = next((r["top1"] for r in rows if r["rate"] == 0), dense_top1)
        plot_sweep(rows, csv_path.with_suffix(".png"), dense_top1=dense_top1,
                   title=f"{model_name} ({sweep.source}): accuracy vs pruning rate ({sweep.granularity}, "
                         f"{sweep.scope}, no retraining){synthetic_note(run)}")
    run.say(f"sweep of {sweep.source}: {len(ranges)} range(s) → plots/")


def write_plots(run: Run, paths: list[Path]) -> None:
    """Accuracy against sparsity over every model, and the mask figures the variants ask for."""
    from prunekit.report.plots import plot_accuracy_sparsity, plot_mask

    plots = names.plots(run.folder)
    checkpoints = {p: load_checkpoint(p) for p in paths if "_int8" not in p.name}
    if run.experiment.accuracy_sparsity_plot:
        dense = checkpoints[paths[0]]
        dense_count = weight_counts(dense.model)[0]
        points = [accuracy_point(point_label(path, loaded.meta), loaded.model, loaded.meta, dense_count, path.name)
                  for path, loaded in checkpoints.items()]
        plot_accuracy_sparsity(points, plots / "accuracy_sparsity.png",
                               title=f"{run.experiment.name}: {arch_label(dense.arch)}, test accuracy vs weight "
                                     f"sparsity{synthetic_note(run)}")
    for variant in run.experiment.variants:
        for layer in variant.mask_plots:
            weight = dict(mask_model(run, variant).named_modules())[layer].weight.detach()
            kept = (weight != 0).reshape(weight.shape[0], -1)
            plot_mask(kept, plots / f"mask_{variant.name}_{layer}.png", title=f"{variant.name}: {layer}")


def mask_model(run: Run, variant: VariantSpec):
    """The model whose masks a variant's mask figures show: for filter pruning the masked model of the last
    round (the saved result is physically smaller and has no zeros left), else the result itself."""
    rounds = names.finished_rounds(run.work / variant.name)
    if variant.prune is not None and variant.prune.granularity == "filter" and rounds:
        return load_checkpoint(rounds[-1]).model
    return load_checkpoint(variant_path(run, variant)).model


def ensure_comparison(run: Run, paths: list[Path]) -> None:
    from prunekit.analysis.compare import (CompareSettings, compare_checkpoints, save_comparison,
                                           save_comparison_csv)
    from prunekit.measure.timing import DEFAULT_TIMING_THREADS
    from prunekit.report.tables import TERMINAL_WIDTH, display_rows, markdown_table, terminal_rows

    spec = run.experiment.compare
    settings = CompareSettings(device=spec.device, threads=spec.threads or DEFAULT_TIMING_THREADS,
                               batch_size=spec.batch_size,
                               repeats=spec.repeats, timing=spec.timing)
    comparison = compare_checkpoints(paths, lambda meta: run.data, settings, progress=run.progress)
    save_comparison(comparison, run.folder / "compare.json")
    save_comparison_csv(comparison, run.folder / "compare.csv")
    notes = ["", comparison.method, *comparison.notes()]
    atomic_write_text(run.folder / "compare.md", "\n".join([markdown_table(display_rows(comparison)), *notes]) + "\n")
    narrow, left_out = terminal_rows(comparison)  # the terminal gets what fits; compare.md has every column
    more = [f"({len(left_out)} more column(s) to fit {TERMINAL_WIDTH} characters: every column is in "
            f"{run.folder / 'compare.md'})"] if left_out else []
    print("\n".join([markdown_table(narrow), *more, *notes]), flush=True)


# --- helpers ---------------------------------------------------------------------------------------------

def source_path(run: Run, name: str) -> Path:
    if name == "baseline":
        return names.baseline(run.folder)
    return variant_path(run, next(v for v in run.experiment.variants if v.name == name))


def variant_path(run: Run, variant: VariantSpec) -> Path:
    return Path(json.loads(names.variant_record(run.folder, variant.name).read_text())["path"])


def retrain_config(run: Run, overrides: dict) -> TrainConfig:
    """Retraining inside a pruning schedule: the baseline's settings with a fine-tuning lr, then overrides."""
    base = run.experiment.baseline.train.model_dump()
    base.update({"lr": FINETUNE_LR, "warmup_epochs": 0, "seed": run.experiment.seed})
    return TrainConfig(**{**base, **overrides})


def data_meta(data: DataBundle) -> dict:
    """The dataset's name and what :func:`prunekit.pipeline.data_meta` records about the data."""
    from prunekit.pipeline import data_meta as trained_data_meta

    return {"dataset": data.info.name, **trained_data_meta(data)}


def foreign_normalisation(name: str | None, data: DataBundle) -> dict:
    from prunekit.data.normalisation import parse_normalisation

    mean, std = parse_normalisation(name, data.info)
    return {"mean": list(mean), "std": list(std)}


def evaluate(run: Run, model, meta: dict) -> dict:
    from prunekit.evaluation import evaluate_split

    metrics = evaluate_split(model, run.data, "test", *input_normalisation(meta, run.data.info))
    return metrics.as_test_meta()


def point_label(path: Path, meta: dict) -> str:
    """``dense``, or the variant's folder name (unique per variant) with its method and granularity."""
    label = "dense" if path.name == BASELINE else path.parent.name
    if meta.get("granularity"):
        label = f"{label} ({meta.get('method', '')} {meta['granularity']})".replace("( ", "(")
    return label


def synthetic_note(run: Run) -> str:
    return " (SYNTHETIC data)" if run.data.synthetic else ""
