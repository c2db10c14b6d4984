"""Typed configurations with their defaults in one place (units in the names or comments)."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """The mapping in the YAML file ``path``; one-line errors for a missing file or a folder, bad YAML, a key
    written twice (plain YAML would keep the last value silently) or a non-mapping."""
    import yaml

    from prunekit.errors import PrunekitError, require_file

    path = Path(path)
    require_file(path, what)
    try:
        data = yaml.load(path.read_text(), Loader=unique_key_loader())
    except DuplicateKeyError as exc:
        raise PrunekitError(f"{path}: key {exc.key!r} appears twice (lines {exc.first} and {exc.second}) in this "
                            f"{what}; keep one of them") from None
    except yaml.YAMLError as exc:
        raise PrunekitError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise PrunekitError(f"{path} must be a YAML mapping ({what})")
    return data


class DuplicateKeyError(Exception):
    """A mapping key written twice in a YAML file (``first``/``second``: 1-based line numbers)."""

    def __init__(self, key, first: int, second: int):
        super().__init__(f"duplicate key {key!r} on lines {first} and {second}")
        self.key, self.first, self.second = key, first, second


def unique_key_loader():
    """A ``yaml.SafeLoader`` subclass that raises :class:`DuplicateKeyError` for a key repeated in one mapping
    (built on first use so importing this module does not import yaml)."""
    global _UNIQUE_KEY_LOADER
    if _UNIQUE_KEY_LOADER is None:
        import yaml

        class UniqueKeyLoader(yaml.SafeLoader):
            def construct_mapping(self, node, deep=False):
                seen = {}
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                    if not isinstance(key, Hashable):
                        continue  # SafeLoader reports an unhashable key itself
                    if key in seen:
                        raise DuplicateKeyError(key, seen[key], line)
                    seen[key] = line
                return super().construct_mapping(node, deep)

        _UNIQUE_KEY_LOADER = UniqueKeyLoader
    return _UNIQUE_KEY_LOADER


_UNIQUE_KEY_LOADER = None


FINETUNE_LR = 0.01  # peak lr of masked retraining (prune, finetune, experiment variants): a tenth of from scratch


class StrictModel(BaseModel):
    """Rejects unknown fields so a typo in a YAML file is an error that names the field."""

    model_config = ConfigDict(extra="forbid")


class TrainConfig(StrictModel):
    """Training hyper-parameters. Defaults follow common CIFAR practice (SGD + momentum, batch 128,
    lr 0.1 with cosine decay, weight decay 5e-4); the papers train 160–200 epochs."""

    epochs: int = Field(160, ge=0, description="passes over the training split")
    batch_size: int = Field(128, ge=1, description="images per optimizer step (global, all ranks)")
    lr: float = Field(0.1, gt=0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, description="L2 penalty on every parameter")
    nesterov: bool = False
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: tuple[float, ...] = Field((0.5, 0.75), description="step schedule: fractions of training")
    gamma: float = Field(0.1, gt=0, description="step schedule: lr factor at each milestone")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up from 0, in epochs")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: bool = Field(True, description="random crop (pad 4) and horizontal flip of training images")
    cutout: int = Field(0, ge=0, description="side of the cutout square in pixels (0: off)")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = Field(False, description="torch.compile the model (CUDA recommended)")
    sync_bn: bool = Field(False, description="SyncBatchNorm across ranks in distributed training")
    sparsity_reg: float = Field(0.0, ge=0, description="network slimming: λ of λ·Σ|γ| on BN scales")
    log_every: int = Field(20, ge=1, description="steps between progress updates (host syncs)")
    distill: bool = Field(False, description="knowledge distillation from the dense starting model (teacher)")
    distill_alpha: float = Field(0.9, ge=0, le=1, description="weight of the distillation term; 1 − α on the labels")
    distill_temperature: float = Field(4.0, gt=0, description="softmax temperature of teacher and student logits")


#: The scope a ``sparsity`` target gets when none is given: Han et al.'s one global magnitude threshold for
#: single weights; Li et al.'s same fraction in every layer for filters (a global filter ranking needs a
#: normalisation across layers and is opt-in).
#: The scopes each granularity understands, its default first: the one list that YAML validation, the CLI's
#: ``--scope`` choices and the docs read.
SCOPES = {"unstructured": ("global", "layer", "lamp"), "filter": ("layer", "global")}
DEFAULT_SCOPE = {granularity: scopes[0] for granularity, scopes in SCOPES.items()}
ALL_SCOPES = tuple(dict.fromkeys(scope for scopes in SCOPES.values() for scope in scopes))
#: The targets each granularity understands (exactly one per prune).
TARGETS = {"unstructured": ("sparsity", "ratios"), "filter": ("sparsity", "ratios", "cfg", "macs_target",
                                                                 "latency_target")}


class PruneConfig(StrictModel):
    """What to prune and how (shared by every granularity and schedule).

    ``sparsity`` is the target fraction of weights (unstructured) or of conv filters (filter); ``ratios``
    maps layer names to per-layer fractions (``default`` applies to unnamed layers); ``cfg`` (VGG) and
    ``macs_target`` (fraction of the original MACs to keep at most) and ``latency_target`` (fraction of the
    dense model's measured latency) are filter-only allocations.
    """

    granularity: Literal["unstructured", "filter"] = "unstructured"
    sparsity: float | None = Field(None, ge=0, lt=1)
    scope: str | None = Field(
        None, description="with sparsity: one ranking over all layers (global), the same fraction per layer, or "
                          "(unstructured) one ranking of LAMP scores; default: DEFAULT_SCOPE of the granularity; SCOPES lists what each granularity understands")
    ratios: dict[str, float] | None = None
    criterion: str = Field("l1", description="filter score: a name in prunekit.prune.importance.CRITERIA")
    cfg: list[int | str] | None = None
    macs_target: float | None = Field(None, gt=0, le=1)
    latency_target: float | None = Field(None, gt=0, le=1, description="fraction of the dense model's measured "
                                         "latency to reach (filter; needs a latency table, see measure.latency)")
    round_to: int | None = Field(None, ge=1, description="latency or MACs target: kept widths are multiples of "
                                                         "this (default: the latency table's measured widths; any "
                                                         "width for a MACs target)")
    include_classifier: bool = Field(False, description="prune the classifier with a global/uniform target")
    exclude: list[str] = Field(default_factory=list, description="layer names or glob patterns a sparsity target "
                                                                 "leaves unpruned, e.g. the last conv")
    schedule: Literal["oneshot", "iterative"] = "oneshot"
    iterations: int = Field(3, ge=1, description="IMP rounds")
    finetune_epochs: int = Field(0, ge=0, description="masked retraining epochs after each round")
    rewind_to: str | None = Field(None, description="checkpoint whose weights survivors rewind to (IMP)")
    recalibrate_bn: int = Field(0, ge=0, description="training batches to re-estimate BN statistics on after "
                                                     "each pruning step (0: off)")
    seed: int = 0

    @model_validator(mode="after")
    def _default_scope(self) -> "PruneConfig":
        if self.scope is None:
            self.scope = DEFAULT_SCOPE[self.granularity]
        if self.scope not in SCOPES[self.granularity]:
            lamp = " (lamp ranks single weights)" if self.scope == "lamp" else ""
            raise ValueError(f"scope {self.scope!r}{lamp} does not apply to granularity {self.granularity}; "
                             f"use one of {', '.join(SCOPES[self.granularity])}")
        return self

    def check_target(self) -> None:
        """Raise PrunekitError unless exactly one target this granularity understands is set."""
        from prunekit.errors import PrunekitError

        allowed = TARGETS[self.granularity]
        given = [k for k in ("sparsity", "ratios", "cfg", "macs_target", "latency_target")
                 if getattr(self, k) is not None]
        if len(given) != 1 or given[0] not in allowed:
            raise PrunekitError(f"{self.granularity} pruning needs exactly one of {', '.join(allowed)}; "
                                f"got {', '.join(given) or 'none'}")
        if self.exclude and self.sparsity is None:
            raise PrunekitError("exclude (--exclude) leaves layers out of a sparsity target; a ratio file or cfg "
                                "names its layers itself")


def make_prune_config(**fields) -> PruneConfig:
    """A :class:`PruneConfig`, with validation failures raised as :class:`PrunekitError`."""
    from pydantic import ValidationError

    from prunekit.errors import PrunekitError

    sparsity = fields.get("sparsity")
    if sparsity is not None and (isinstance(sparsity, bool) or not isinstance(sparsity, (int, float))
                                 or not 0.0 <= float(sparsity) < 1.0):
        raise PrunekitError(f"sparsity is {sparsity!r}; it must be a number in [0, 1) (0.8 prunes 80%)")
    try:
        return PruneConfig(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise PrunekitError(f"invalid pruning settings: {problems}") from None
