"""The experiment file: one YAML validated against these types; errors name the field.

A file has a ``baseline`` (train one, or load a prunekit checkpoint or foreign weights), any number of
``variants`` (each prunes and/or fine-tunes the baseline or another variant, optionally quantizes),
optional ``sweeps`` and ``plots``, and ``compare`` settings. ``quick`` holds overrides merged in by
``--quick`` (budgets that finish in minutes on a 2-core CPU). Relative paths are read from the current
working directory.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from prunekit.binarize import BinarizeConfig
from prunekit.config import PruneConfig, StrictModel, TrainConfig, read_yaml_mapping
from prunekit.errors import PrunekitError


class DataSpec(StrictModel):
    dataset: str = "cifar10"
    root: str | None = Field(None, description="folder of the dataset (default: --data, $PRUNEKIT_DATA, cache)")
    val_split: float = Field(0.0, ge=0, lt=1)
    limit_train: int | None = Field(None, ge=1, description="use only the first N training images")
    limit_test: int | None = Field(None, ge=1)


class BaselineSpec(StrictModel):
    model: str = Field(description="a registered model name, or your own model: path/to/file.py:ClassName "
                                   "(relative to the working directory) or package.module:factory")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="constructor arguments (JSON types)")
    checkpoint: str | None = Field(None, description="start from this prunekit checkpoint instead of training")
    weights: str | None = Field(None, description="start from this foreign state dict instead of training")
    normalize: str | None = Field(None, description="input normalisation of foreign weights: imagenet | dataset")
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _one_source(self):
        if self.checkpoint and self.weights:
            raise ValueError("give either checkpoint or weights, not both")
        return self


class QuantizeSpec(StrictModel):
    calib_batches: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=1)


class VariantSpec(StrictModel):
    """One model derived from ``source`` (``baseline`` or an earlier variant's name)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    source: str = "baseline"
    prune: PruneConfig | None = None
    ratios_file: str | None = Field(None, description="YAML of layer ratios (merged into prune.ratios)")
    finetune: TrainConfig | None = Field(None, description="plain (masked) fine-tuning after pruning")
    retrain: dict[str, Any] = Field(default_factory=dict,
                                    description="TrainConfig overrides for the retraining inside the schedule")
    quantize: QuantizeSpec | None = None
    binarize: BinarizeConfig | None = Field(None, description="binarize (after prune) and fine-tune with STE; "
                                                               "`retrain` overrides its TrainConfig")
    mask_plots: list[str] = Field(default_factory=list, description="layers whose masks are plotted")

    @model_validator(mode="after")
    def _does_something(self):
        if self.prune is None and self.finetune is None and self.quantize is None and self.binarize is None:
            raise ValueError(f"variant {self.name!r} needs prune, binarize, finetune or quantize")
        return self


class SweepSpec(StrictModel):
    source: str = "baseline"
    granularity: str = "unstructured"
    scope: str = "global"
    start: float = Field(0.0, ge=0, lt=1)
    stop: float = Field(0.95, gt=0, lt=1)
    steps: int = Field(20, ge=2)
    zoom: tuple[float, float] | None = Field(None, description="a second, narrower sweep (e.g. the steep part)")


class CompareSpec(StrictModel):
    device: str = "cpu"
    repeats: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    threads: int | None = None
    timing: bool = True


class Experiment(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 0
    data: DataSpec = Field(default_factory=DataSpec)
    baseline: BaselineSpec
    variants: list[VariantSpec] = Field(default_factory=list)
    sweeps: list[SweepSpec] = Field(default_factory=list)
    accuracy_sparsity_plot: bool = True
    strict: bool = Field(False, description="a filter-pruning variant whose target, allocated on its source, achieves "
                                            "below half of what it asks fails before it is pruned (as --strict)")
    compare: CompareSpec = Field(default_factory=CompareSpec)
    quick: dict[str, Any] = Field(default_factory=dict, description="overrides merged in by --quick")

    @model_validator(mode="after")
    def _sources_exist(self):
        known = {"baseline"}
        for variant in self.variants:
            if variant.source not in known:
                raise ValueError(f"variant {variant.name!r}: source {variant.source!r} is neither 'baseline' "
                                 f"nor an earlier variant ({', '.join(sorted(known))})")
            if variant.name in known:
                raise ValueError(f"variant name {variant.name!r} is used twice")
            known.add(variant.name)
        for sweep in self.sweeps:
            if sweep.source not in known:
                raise ValueError(f"sweep source {sweep.source!r} is not one of {', '.join(sorted(known))}")
        return self


def deep_merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` merged in recursively; a list of variants merges by ``name``."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if key == "variants" and isinstance(value, dict):
            by_name = {v["name"]: v for v in merged.get("variants", [])}
            for name, patch in value.items():
                if name not in by_name:
                    raise PrunekitError(f"an override of variants names {name!r}, which is not a variant "
                                        f"(variants: {', '.join(by_name)}); address variants by name")
                by_name[name].update(deep_merge(by_name[name], patch))
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_assignment(text: str) -> dict:
    """``"data.limit_train=500"`` → ``{"data": {"limit_train": 500}}`` (the value is read as YAML)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise PrunekitError(f"--set {text!r}: use dotted.key=value, e.g. --set data.limit_train=500")
    result: dict = yaml.safe_load(value) if value else None
    for part in reversed(key.split(".")):
        result = {part: result}
    return result


def load_experiment(source: str | Path | dict, quick: bool = False, assignments: list[str] = ()) -> Experiment:
    """Read and validate an experiment (a YAML path or a dict), applying ``quick`` and ``--set`` overrides."""
    raw = copy.deepcopy(source) if isinstance(source, dict) else read_yaml_mapping(source, "experiment file")
    if quick:
        raw = deep_merge(raw, raw.get("quick") or {})
    for text in assignments:
        raw = deep_merge(raw, parse_assignment(text))
    try:
        return Experiment.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
                             for err in exc.errors())
        raise PrunekitError(f"invalid experiment: {problems}") from None
