"""Pruning schedules with masked retraining: where pruning (``prune/``) meets training (``train/``).

``prune/`` and ``train/`` never import each other; the :mod:`prunekit.pipeline` package and the experiment
runner built on it (``experiment/``) are the only places that use both.

Schedules (``PruneConfig.schedule``):

* ``oneshot`` (OMP): prune to the target once, then retrain with the mask for ``finetune_epochs``;
* ``iterative`` (IMP): ``K = iterations`` rounds; round ``k`` prunes to ``round_fraction(target, k/K)``
  = ``1 − (1 − target)^(k/K)``, i.e. the same fraction of the *remaining* weights each round, so the
  last round lands exactly on the target; masked retraining after every round.

With ``rewind_to`` the surviving weights (and BN statistics) are reset to that checkpoint's values after
each pruning step, masks kept (lottery-ticket rewinding). Masks live in the model as forward pre-hooks
(``weight_orig * weight_mask``), so pruned weights stay exactly zero whatever the optimizer does.

Each round works in ``OUT/<run name>/round_<k>/``: ``fit``'s resumable ``last.pt`` while retraining,
``round.pt`` once done. Running the same command again resumes instead of recomputing; a folder written
with other settings is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

import prunekit.paths as paths
from prunekit.checkpoint import Checkpoint, load_checkpoint, read_checkpoint_file, save_checkpoint
from prunekit.config import PruneConfig, TrainConfig
from prunekit.data import DataBundle
from prunekit.errors import PrunekitError
from prunekit.evaluation import Metrics, evaluate_split
from prunekit.foreign import foreign_state_dict
from prunekit.masking import effective_state_dict, masked_keys
from prunekit.measure import count_macs, count_nonzero_parameters, count_parameters
from prunekit.pipeline.finetuning import distillation
from prunekit.pipeline.inputs import inherited_meta, with_normalisation
from prunekit.prune import apply_masks, compute_masks, extract_masks, make_permanent, sparsity_of, sparsity_report
from prunekit.prune.allocate import round_fraction
from prunekit.prune.channels import PlanOutcome
from prunekit.prune.granularity import get_granularity
from prunekit.prune.importance import PROBE_IMAGES
from prunekit.train import Callback, fit, resolve_device
from prunekit.train.bn import recalibrate_bn
from prunekit.train.loop import sample_batches

#: Labelled training batches (of SCORING_BATCH_SIZE images, seeded by the prune seed) a data-driven
#: criterion such as ``taylor`` scores channels on.
SCORING_BATCHES, SCORING_BATCH_SIZE = 4, 128
#: Training batches whose loss values the widths of a latency target: the images a
#: :class:`prunekit.prune.importance.LossProbe` reads (:data:`prunekit.prune.importance.PROBE_IMAGES`).
LATENCY_VALUE_BATCHES = -(-PROBE_IMAGES // SCORING_BATCH_SIZE)

@dataclass
class PruneResult:
    """What :func:`run_pruning` produced. ``sparsity`` is the achieved overall weight sparsity (zeros over
    all conv + linear weights); ``filter_sparsity`` is set for filter granularity, and so is ``outcome``: the
    run's asked vs achieved (filters and MACs, the blocking ops of a shortfall), a
    :class:`prunekit.prune.channels.PlanOutcome` (also in ``meta["cut"]`` as plain values)."""

    model: nn.Module
    path: Path
    rounds: list[dict] = field(default_factory=list)
    target: float | None = None
    sparsity: float = 0.0
    filter_sparsity: float | None = None
    test_top1: float = float("nan")
    test_top5: float = float("nan")
    meta: dict = field(default_factory=dict)
    test: Metrics | None = None  # the test evaluation of the result (with its predicted-class counts)
    outcome: PlanOutcome | None = None


def method_label(config: PruneConfig) -> str:
    """``Omp`` (one-shot magnitude pruning) or ``Imp`` (iterative)."""
    return "Omp" if config.schedule == "oneshot" else "Imp"


def rounds_of(config: PruneConfig) -> int:
    return 1 if config.schedule == "oneshot" else config.iterations


def example_inputs(data: DataBundle, device: torch.device) -> torch.Tensor:
    """One zero image of the data's shape, for tracing and MAC counting."""
    return torch.zeros(1, *data.test[0].shape[1:], device=device)


def fingerprint_of(model: nn.Module, data: DataBundle, prune_config: PruneConfig, train_config: TrainConfig) -> dict:
    """Identifies a run: both configs, the data and a checksum of the starting weights (rounded, so it does
    not depend on the device's summation order)."""
    with torch.no_grad():
        checksum = sum(float(v.double().abs().sum()) for v in effective_state_dict(model).values()
                       if v.is_floating_point())
    data_id = {"dataset": data.info.name, "train_images": len(data.train[1]), "mean": list(data.info.mean),
               "std": list(data.info.std), "val_images": 0 if data.val is None else len(data.val[1])}
    return {"prune": prune_config.model_dump(mode="json"), "train": train_config.model_dump(mode="json"),
            "data": data_id, "weights_checksum": float(f"{checksum:.6g}")}


def restore(model: nn.Module, path: Path, fingerprint: dict) -> Checkpoint:
    """Load the round checkpoint ``path`` into ``model`` (weights and masks) after checking it belongs to
    this run; ``model`` keeps its identity."""
    saved = read_checkpoint_file(path).get("meta", {}).get("fingerprint")
    if saved != fingerprint:
        raise PrunekitError(f"{path.parent.parent} holds a pruning run with other settings or another starting "
                            "model; choose another --out (or --name), or delete that folder to start over")
    make_permanent(model)
    return load_checkpoint(path, model=model)


def rewind_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Set every parameter and buffer of ``model`` to ``state`` (an effective state dict); masked tensors
    get the value in ``<name>_orig``, so masks stay and pruned weights stay zero."""
    current = model.state_dict()
    origs = {base: orig for base, (orig, _) in masked_keys(model).items()}
    expected = set(effective_state_dict(model))
    if set(state) != expected or any(state[k].shape != current[origs.get(k, k)].shape for k in expected):
        raise PrunekitError("--rewind-to names a checkpoint of another architecture (or another shape) than the "
                            "model being pruned; rewind to an earlier checkpoint of the same training run")
    with torch.no_grad():
        for key, value in state.items():
            current[origs.get(key, key)].copy_(value)


def prune_step(model: nn.Module, data: DataBundle, config: PruneConfig, k: int, rounds: int,
               rewind: dict | None, device: torch.device) -> dict:
    """Round ``k``: compute and apply masks, measure, then rewind survivors if asked. Returns the record."""
    progress = k / rounds
    masks = compute_masks(model, config, progress, example_inputs=example_inputs(data, device),
                          batches=scoring_batches(data, config, device))
    apply_masks(model, masks)
    recalibrated = recalibrate_bn(model, sample_batches(data, config.recalibrate_bn, seed=config.seed, device=device))
    pruned = evaluate_split(model, data, "test", device=device)
    if rewind is not None:
        rewind_weights(model, rewind)
    target = round_fraction(config.sparsity, progress) if config.sparsity is not None else None
    record = {"round": k, "target": target, "sparsity": sparsity_report(model)["overall"],
              "masked_sparsity": sparsity_of(extract_masks(model)), "pruned_top1": pruned.top1,
              "pruned_top5": pruned.top5, "bn_recalibration_batches": recalibrated}
    record.update(get_granularity(config.granularity).achieved(model))
    return record


def scoring_batches(data: DataBundle, config: PruneConfig, device: torch.device) -> list | None:
    """The labelled training batches (seeded by ``config.seed``) a filter cut by ``config`` reads, else None:
    :data:`SCORING_BATCHES` for a data-driven criterion (``taylor``), else :data:`LATENCY_VALUE_BATCHES` for a
    latency target (its widths are valued by the measured loss, see
    :func:`prunekit.prune.allocate.measured_values`). ``prune`` and ``prune-channels`` both take them from here."""
    from prunekit.prune.importance import needs_batches

    if config.granularity != "filter":
        return None
    count = (SCORING_BATCHES if needs_batches(config.criterion) else
             LATENCY_VALUE_BATCHES if config.latency_target is not None else 0)
    return sample_batches(data, count, SCORING_BATCH_SIZE, seed=config.seed, device=device) if count else None


def run_round(model: nn.Module, data: DataBundle, prune_config: PruneConfig, train_config: TrainConfig,
              run_dir: Path, k: int, rewind: dict | None, fingerprint: dict, meta: dict, progress: bool,
              callbacks: Sequence[Callback] = ()) -> dict:
    """Prune (round ``k``) and retrain in ``run_dir``; resumes a finished or interrupted round."""
    device = resolve_device(train_config.device)
    done, last = paths.round_done(run_dir), paths.last(run_dir)
    if done.exists():
        return restore(model, done, fingerprint).meta["round_record"]
    resume = None
    if last.exists():  # retraining was interrupted: the round is pruned already
        saved = restore(model, last, fingerprint)
        record, resume = dict(saved.meta["round_record"]), saved.train_state
    else:
        record = prune_step(model, data, prune_config, k, rounds_of(prune_config), rewind, device)
    round_meta = {**meta, "round_record": record, "fingerprint": fingerprint}
    fit(model, data, train_config, run_dir=run_dir, resume=resume, meta=round_meta, callbacks=callbacks,
        progress=progress)
    retrained = evaluate_split(model, data, "test", device=device)
    record.update(retrained_top1=retrained.top1, retrained_top5=retrained.top5, retrain_epochs=train_config.epochs)
    save_checkpoint(model, done, {**round_meta, "round_record": record})
    return record


def format_round(record: dict, rounds: int) -> str:
    """``round 2/3: weight sparsity 0.5480, 0.5528 of masked weights (target 0.5528) | test top-1 …``; weight
    sparsity = zero conv + linear weights / all of them. Without retraining epochs no "after retraining"."""
    target = f" (target {record['target']:.4f})" if record.get("target") is not None else ""
    if "filter_sparsity" in record:
        reached = f"filter sparsity {record['filter_sparsity']:.4f}{target}, weight sparsity {record['sparsity']:.4f}"
    else:
        reached = (f"weight sparsity {record['sparsity']:.4f}, {record['masked_sparsity']:.4f} of masked "
                   f"weights{target}")
    if record.get("retrain_epochs") == 0:
        return f"round {record['round']}/{rounds}: {reached} | test top-1 {record['pruned_top1']:.2f}% (not retrained)"
    return (f"round {record['round']}/{rounds}: {reached} | test top-1 after pruning {record['pruned_top1']:.2f}% "
            f"→ after retraining {record['retrained_top1']:.2f}%")


def achieved_weight_sparsity(model: nn.Module, config: PruneConfig, overall: float) -> float:
    """The unstructured sparsity a result is named by, counted over what the target counts: for a ``sparsity``
    target the masked fraction of the layers in its scope (the classifier is spared unless included, so the
    overall fraction sits a little below the target), for a ratio file the overall weight sparsity."""
    return sparsity_of(extract_masks(model)) if config.sparsity is not None else overall


def result_name(config: PruneConfig, achieved: float, top1: float) -> str:
    """``Omp_unstructured_0.80_acc_91.52``: method, granularity, achieved sparsity truncated to two decimals
    (0.3981 is ``0.39``: a name never claims a target that was not reached), test top-1."""
    return f"{method_label(config)}_{config.granularity}_{truncated(achieved)}_acc_{top1:.2f}"


def truncated(value: float, decimals: int = 2) -> str:
    """``value`` cut (not rounded) to ``decimals`` places; a float a hair below a boundary
    (0.29 × 100 = 28.999…) still counts as reaching it."""
    scale = 10 ** decimals
    return f"{math.floor(value * scale + 1e-9) / scale:.{decimals}f}"


def work_name(config: PruneConfig, name: str | None) -> str:
    if name:
        return paths.checked_name(name)
    target = f"{config.sparsity:.2f}" if config.sparsity is not None else "ratios"
    return f"{method_label(config)}_{config.granularity}_{target}"


def shrink_filters(model: nn.Module, data: DataBundle, config: PruneConfig,
                   device: torch.device) -> tuple[float, PlanOutcome]:
    """Filter granularity: measure the masked ``model``'s filter sparsity, then remove the masked filters
    physically. Side effect: ``model`` is shrunk in place (its masks made permanent, see
    :func:`prunekit.prune.channels.shrink_with_outcome`). Returns the filter sparsity and the run's asked
    (``config``) vs achieved."""
    from prunekit.prune import filter_sparsity
    from prunekit.prune.channels import shrink_with_outcome

    achieved = filter_sparsity(model, model)
    return achieved, shrink_with_outcome(model, example_inputs(data, device), config)


def require_whole_cut(model: nn.Module, data: DataBundle, config: PruneConfig, device: torch.device) -> None:
    """For a structured ``config``: raise PrunekitError with the shortfall line (see
    :meth:`PlanOutcome.require`) when the whole target, allocated on the dense ``model``, would achieve below
    half of what it asks. Traces and allocates only: nothing is written or changed."""
    from prunekit.prune.channels import predict_outcome

    if get_granularity(config.granularity).shrinks:
        predict_outcome(model, example_inputs(data, device), config,
                        batches=scoring_batches(data, config, device)).require("--strict")


def run_pruning(model: nn.Module, data: DataBundle, prune_config: PruneConfig, train_config: TrainConfig,
                out_dir: str | Path, name: str | None = None, meta: dict | None = None,
                progress: bool = True, callbacks: Sequence[Callback] = (), strict: bool = False) -> PruneResult:
    """Prune ``model`` by ``prune_config``'s schedule, retraining with ``train_config`` (its ``epochs`` is
    replaced by ``finetune_epochs``) after every round; save the result in ``out_dir``.

    ``meta`` is the input checkpoint's metadata: its dataset/normalisation are used for retraining and
    evaluation and copied into the result. ``callbacks`` go to every retraining ``fit`` (e.g.
    ``PrintEpoch``); with ``train_config.distill`` a copy of the starting (dense) ``model`` is the teacher of
    every retraining. ``prune_config.recalibrate_bn`` batches re-estimate BN statistics after each pruning
    step. Prints one line per round. Side effects: ``model`` is pruned
    and retrained in place (for filter granularity it is then also shrunk physically, in place, and
    ``result.model`` is that smaller model); writes round folders under ``out_dir/<run name>/`` and the final checkpoint
    ``out_dir/<name or Omp_unstructured_0.80_acc_91.52>.pt``. ``strict``: for filter granularity, first
    check that the target is reachable (:func:`require_whole_cut`) and raise before anything is written.
    """
    data = with_normalisation(data, meta)
    meta = inherited_meta(meta or {}, data)
    train_config = train_config.model_copy(update={"epochs": prune_config.finetune_epochs})
    device = resolve_device(train_config.device)
    model.to(device)
    if strict:
        require_whole_cut(model, data, prune_config, device)
    dense = {"dense_params": count_parameters(model), "dense_macs": count_macs(model),
             "dense_weights": sparsity_report(model)["params"]}  # the weight-sparsity denominator
    rewind = foreign_state_dict(prune_config.rewind_to) if prune_config.rewind_to else None
    fingerprint = fingerprint_of(model, data, prune_config, train_config)
    callbacks = [*callbacks, *distillation(train_config, model)]  # teacher: the dense starting model
    work, rounds = Path(out_dir) / work_name(prune_config, name), []
    for k in range(1, rounds_of(prune_config) + 1):
        record = run_round(model, data, prune_config, train_config, paths.round_dir(work, k), k, rewind, fingerprint,
                           meta, progress, callbacks)
        rounds.append(record)
        print(format_round(record, rounds_of(prune_config)) + (" (SYNTHETIC data)" if data.synthetic else ""),
              flush=True)
    return finish(model, data, prune_config, train_config, out_dir, name, meta, rounds, dense, device)


def finish(model: nn.Module, data: DataBundle, prune_config: PruneConfig, train_config: TrainConfig,
           out_dir: str | Path, name: str | None, meta: dict, rounds: list[dict], dense: dict,
           device: torch.device) -> PruneResult:
    """Measure the pruned model (shrinking it for filter granularity), name it and save it."""
    sparsity = sparsity_report(model)["overall"]
    filters = outcome = None
    if get_granularity(prune_config.granularity).shrinks:
        filters, outcome = shrink_filters(model, data, prune_config, device)
    test = evaluate_split(model, data, "test", device=device)
    achieved = filters if filters is not None else achieved_weight_sparsity(model, prune_config, sparsity)
    result_meta = {
        **meta, "method": method_label(prune_config).upper(),
        "granularity": prune_config.granularity, "schedule": prune_config.schedule,
        "target_sparsity": prune_config.sparsity, "sparsity": sparsity, "filter_sparsity": filters,
        "params": count_parameters(model), "nonzero_params": count_nonzero_parameters(model),
        "macs": count_macs(model), **dense, "rounds": rounds, **test.as_test_meta(),
        "prune_config": prune_config.model_dump(mode="json"), "train_config": train_config.model_dump(mode="json"),
        **({"cut": outcome.as_record()} if outcome else {}),
    }
    stem = paths.checked_name(name) if name else result_name(prune_config, achieved, test.top1)
    path = save_checkpoint(model, Path(out_dir) / f"{stem}.pt", result_meta)
    return PruneResult(model=model, path=path, rounds=rounds, target=prune_config.sparsity, sparsity=sparsity,
                       filter_sparsity=filters, test_top1=test.top1, test_top5=test.top5, meta=result_meta,
                       test=test, outcome=outcome)
