"""One checkpoint format for every artefact prunekit writes.

A checkpoint is a plain dict saved with ``torch.save`` and loaded with ``weights_only=True``:

``format``      ``"prunekit"`` and ``version``
``arch``        architecture as data: ``{"name", "kwargs", "channels"}`` (per-layer channel counts), so a
                structurally pruned model rebuilds with no extra code or arguments; for a user model
                ``{"ref": "file.py:Class" | "pkg.mod:factory", "kwargs", "channels"}`` (loading imports that
                file/module and calls only that constructor); ``None`` when the model's class cannot be named
                for import (load those with ``load_checkpoint(path, model=...)``)
``state_dict``  effective weights (masked entries exactly zero)
``masks``       ``{param_name: bool tensor}`` of the masked weights, empty if none
``binarized``   only for a binarized model (:mod:`prunekit.binarize`, a section plugin, see below):
                ``{"method", "activations", "layers"}``; ``state_dict`` then holds the binarized weights and
                ``latent`` the fp32 latent ones
``meta``        dataset, normalisation, accuracy, history, prunekit version, …
``train_state`` optional, for ``--resume``: optimizer, scheduler, epoch, RNG and loader states
``tensor_sha256`` SHA-256 over every tensor in the file (see :func:`tensor_sha256`), checked on load; files
                written before it existed have none and load unchecked

Writes are atomic (temporary file in the same folder, fsync, rename), so a crash never leaves a broken
file where a good one was.

Other file formats (the compact and int8 files of :mod:`prunekit.export`) register a reader with
:func:`register_format`; :func:`load_checkpoint` dispatches on the file's ``format`` field, so this module
imports nothing above it. A format no reader has registered yet makes it import the modules named in
``FORMAT_PLUGINS`` once (the way a plugin system loads entry points) before giving up.

Extra entries of the format itself (a weight re-parametrisation such as binarization) come from sections
registered with :func:`register_section`: each section writes its entries for a model that has it and
re-applies them on load. The modules named in ``SECTION_PLUGINS`` are imported before the first save or load,
so a section is never missed.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from prunekit.atomic import atomic_write
import prunekit.paths as paths
from prunekit.errors import PrunekitError, require_file
from prunekit.masking import Masks, apply_masks, effective_state_dict, extract_masks
from prunekit.models import build_model, is_reference, saved_arch

FORMAT = "prunekit"
VERSION = 1
FORMAT_PLUGINS = ("prunekit.export",)  # modules whose import registers the formats prunekit ships
SECTION_PLUGINS = ("prunekit.binarize",)  # modules whose import registers the sections prunekit ships


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt (and re-masked) model plus everything saved beside it."""

    model: nn.Module
    arch: dict | None
    masks: Masks
    meta: dict = field(default_factory=dict)
    train_state: dict | None = None
    path: Path | None = None


# A reader turns the raw dict of its format into a Checkpoint, or into an ordinary checkpoint dict
# (``format == FORMAT``) that load_checkpoint then rebuilds as usual.
Reader = Callable[[dict, Path], "Checkpoint | dict"]
READERS: dict[str, Reader] = {}


def register_format(name: str, reader: Reader) -> Reader:
    """Make :func:`load_checkpoint` read files whose ``format`` field is ``name`` with ``reader``."""
    if name == FORMAT:
        raise ValueError(f"{FORMAT!r} is the checkpoint format itself; register another name")
    READERS[name] = reader
    return reader


def reader_for(name: Any) -> Reader | None:
    """The reader registered for format ``name`` (importing ``FORMAT_PLUGINS`` once if none is), or None."""
    if not isinstance(name, str) or name == FORMAT:
        return None
    if name not in READERS:
        for module in FORMAT_PLUGINS:
            importlib.import_module(module)
    return READERS.get(name)


@dataclass(frozen=True)
class Section:
    """Extra checkpoint entries for one weight re-parametrisation. ``save(model)`` gives the entries to write
    (None when ``model`` does not have it); ``restore(model, raw)`` re-applies them from the raw checkpoint
    dict to a model whose weights and masks are loaded (doing nothing when the file has none)."""

    save: Callable[[nn.Module], "dict | None"]
    restore: Callable[[nn.Module, dict], None]


SECTIONS: dict[str, Section] = {}
_section_plugins_loaded = False


def register_section(name: str, save: Callable[[nn.Module], "dict | None"],
                     restore: Callable[[nn.Module, dict], None]) -> Section:
    """Make :func:`checkpoint_dict` write ``save(model)``'s entries and :func:`load_checkpoint` call
    ``restore(model, raw)``; registering ``name`` again replaces it."""
    SECTIONS[name] = Section(save, restore)
    return SECTIONS[name]


def sections() -> list[Section]:
    """The registered sections, after importing ``SECTION_PLUGINS`` once."""
    global _section_plugins_loaded
    if not _section_plugins_loaded:
        for module in SECTION_PLUGINS:
            importlib.import_module(module)
        _section_plugins_loaded = True
    return list(SECTIONS.values())


def section_entries(model: nn.Module) -> dict:
    """Every section's entries for ``model`` (written first in the checkpoint dict)."""
    entries: dict = {}
    for section in sections():
        entries.update(section.save(model) or {})
    return entries


CHECKSUM_KEY = "tensor_sha256"


def tensor_sha256(obj: Any) -> str:
    """SHA-256 over every tensor inside ``obj`` (nested dicts/lists/tuples), in a deterministic order: dict
    keys sorted, each tensor hashed with its key path, dtype, shape and raw bytes. Other values are ignored."""
    digest = hashlib.sha256()
    for key, tensor in _tensors_in(obj, ()):
        tensor = tensor.detach().cpu()
        if tensor.is_quantized:
            digest.update(f"{key}|{tensor.dtype}|{tensor.qscheme()}|".encode())
            tensor = tensor.int_repr()
        if tensor.layout != torch.strided:
            tensor = tensor.to_dense()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _tensors_in(obj: Any, key: tuple):
    if isinstance(obj, torch.Tensor):
        yield "/".join(map(str, key)), obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            if not (key == () and k == CHECKSUM_KEY):
                yield from _tensors_in(obj[k], key + (k,))
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _tensors_in(item, key + (i,))


def verify_checksum(raw: Any, path: str | Path) -> None:
    """PrunekitError when ``raw`` (a loaded file) records a tensor checksum its tensors do not match."""
    expected = raw.get(CHECKSUM_KEY) if isinstance(raw, dict) else None
    if expected is not None and tensor_sha256(raw) != expected:
        raise PrunekitError(f"{path} is corrupt: checksum mismatch (its tensors changed after it was written); "
                            "restore it from a copy or re-run the command that wrote it")


def with_checksum(obj: Any) -> Any:
    """A dict with its :func:`tensor_sha256` added under ``tensor_sha256``; anything else unchanged."""
    return {**obj, CHECKSUM_KEY: tensor_sha256(obj)} if isinstance(obj, dict) else obj


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` :func:`with_checksum` of ``obj`` to ``path`` atomically (every format prunekit writes is
    a dict saved here; :func:`read_checkpoint_file` checks the sum); creates the parent folder. Returns the path."""
    obj = with_checksum(obj)
    return atomic_write(path, lambda f: torch.save(obj, f))


def checkpoint_dict(model: nn.Module, meta: dict | None = None, train_state: dict | None = None,
                    arch_ref: str | None = None, kwargs: dict | None = None) -> dict:
    """The checkpoint dict for ``model`` (unmodified); ``arch`` as :func:`prunekit.models.saved_arch` gives it
    (``arch_ref``/``kwargs`` name a user model's constructor; None when the class cannot be named)."""
    from prunekit import __version__

    arch = saved_arch(model, arch_ref, kwargs)
    return {
        **section_entries(model),
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "state_dict": {k: v.detach().cpu() for k, v in effective_state_dict(model).items()},
        "masks": extract_masks(model),
        "meta": {"prunekit_version": __version__, **(meta or {})},
        "train_state": train_state,
    }


def save_checkpoint(model: nn.Module, path: str | Path, meta: dict | None = None,
                    train_state: dict | None = None, arch_ref: str | None = None, kwargs: dict | None = None) -> Path:
    """Write ``model`` (architecture, effective weights, masks) and ``meta`` to ``path`` atomically.

    A model without ``arch`` (built in Python) is recorded by its class, ``{"ref": "<module>:<qualname>"}``
    (a file path for a class of a file loaded by path or of a ``__main__`` script) with kwargs ``{}``;
    ``arch_ref="path/to/file.py:Class"`` or ``"pkg.mod:factory"`` and ``kwargs`` say how to build it instead.
    """
    return atomic_save(checkpoint_dict(model, meta, train_state, arch_ref, kwargs), path)


def read_checkpoint_file(path: str | Path) -> dict:
    """Load the raw dict with ``weights_only=True``; clear errors for missing, corrupt (including a tensor
    checksum mismatch) or foreign files."""
    path = Path(path)
    require_file(path, "checkpoint")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt/unsafe files
        raise PrunekitError(
            f"cannot read {path}: the file is corrupt or not a PyTorch checkpoint ({type(exc).__name__})"
        ) from None
    verify_checksum(raw, path)
    return raw


def load_checkpoint(path: str | Path, model: nn.Module | None = None, model_ref: str | None = None) -> Checkpoint:
    """Rebuild the model stored in ``path`` (or load into ``model``) and re-apply masks.

    A user model's file is looked for as stored, then in the checkpoint's folder; ``model_ref`` (a
    reference) replaces the stored one, e.g. when the model's file moved (kwargs and channels still come
    from the checkpoint).
    """
    raw = read_checkpoint_file(path)
    if model_ref is not None and isinstance(raw, dict) and model is None:
        raw["arch"] = relocated_arch(raw.get("arch"), model_ref, path)
    reader = reader_for(raw.get("format")) if isinstance(raw, dict) else None
    if reader is not None:
        raw = reader(raw, Path(path))
        if isinstance(raw, Checkpoint):
            return raw
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise PrunekitError(
            f"{path} is not a prunekit checkpoint; for a plain state dict use "
            "`--model NAME --weights FILE` (Python: prunekit.load_weights)"
        )
    arch = raw.get("arch")
    if model is None:
        if arch is None:
            raise PrunekitError(f"{path} holds a user model whose class could not be recorded: name it with "
                                "--model path/to/file.py:Class (Python: load_checkpoint(path, model=...))")
        model = rebuild(arch, path)
    load_state(model, raw["state_dict"], source=str(path))
    masks = raw.get("masks") or {}
    if masks:
        apply_masks(model, masks)
    for section in sections():
        section.restore(model, raw)
    return Checkpoint(model=model, arch=arch, masks=masks, meta=raw.get("meta") or {},
                      train_state=raw.get("train_state"), path=Path(path))


def classes_of(source: Checkpoint | nn.Module | dict) -> int | None:
    """The class count of a checkpoint (its meta's ``num_classes``), a meta dict, or a model (the output
    features of its last ``nn.Linear``); None when it cannot be told."""
    if isinstance(source, Checkpoint):
        return classes_of(source.meta) or classes_of(source.model)
    if isinstance(source, dict):
        return source.get("num_classes")
    linears = [m for m in source.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def check_classes(source: Checkpoint | nn.Module | dict, data: Any, name: str = "the checkpoint") -> None:
    """PrunekitError naming both counts when ``source`` (see :func:`classes_of`) was made for another number
    of classes than ``data`` (a DataBundle or DatasetInfo) has; nothing when either count is unknown."""
    info = getattr(data, "info", data)
    expected = classes_of(source)
    if expected is not None and expected != info.num_classes:
        raise PrunekitError(f"{name} has {expected} classes but {info.name} has {info.num_classes}; pass the "
                            "dataset it was trained on (--dataset)")


def rebuild(arch: dict, path: str | Path) -> nn.Module:
    """``build_model(arch)`` for the checkpoint at ``path``: a user model's file is also looked for in its
    folder, and a failure names the checkpoint."""
    try:
        return build_model(arch, search_dirs=[Path(path).parent])
    except PrunekitError as exc:
        if "ref" not in arch:
            raise
        raise PrunekitError(f"{path} holds user model {arch['ref']}: {exc}") from None


def relocated_arch(arch: dict | None, model_ref: str, path: str | Path) -> dict:
    """``arch`` with its reference replaced by ``model_ref``; a registry checkpoint refuses one."""
    if not is_reference(model_ref):
        raise PrunekitError(f"give either a checkpoint or --model {model_ref}, not both")
    if arch is not None and "ref" not in arch:
        raise PrunekitError(f"{path} holds registry model {arch.get('name')!r}, which needs no --model; drop it")
    return {"kwargs": {}, **(arch or {}), "ref": model_ref}


def resume_point(source: str | Path, required: bool = False) -> Checkpoint | None:
    """The one way to pick up an interrupted training run: ``source`` is a run folder (its ``last.pt``) or a
    checkpoint file. Returns the loaded checkpoint when it holds a ``train_state``; otherwise None, or with
    ``required`` a PrunekitError that says what to pass instead."""
    source = Path(source)
    path = paths.last(source) if source.is_dir() else source
    if not path.exists() and not required:
        return None
    loaded = load_checkpoint(path)
    if loaded.train_state:
        return loaded
    if required:
        raise PrunekitError(f"{source} holds no training state; resume from a run's last.pt")
    return None


def load_state(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "weights") -> None:
    """``load_state_dict(strict=True)`` with an error that says which architecture mismatch it is."""
    expected = model.state_dict()
    # BatchNorm fills a missing num_batches_tracked itself (files from older PyTorch lack it)
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
             for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        name = getattr(model, "arch", {}).get("name", type(model).__name__)
        details = []
        if missing:
            details.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            details.append(f"{len(wrong)} shape mismatches (e.g. {'; '.join(wrong[:3])})")
        hint = rename_hint([k for k in expected if k not in state_dict], unexpected)
        raise PrunekitError(
            f"{source} is for another architecture than {name}: " + "; ".join(details)
            + f". {hint or 'Check the model name (`prunekit models`).'}"
        )
    model.load_state_dict(state_dict, strict=True)


def closest_renames(missing: list[str], unexpected: list[str]) -> list[tuple[str, str, int]]:
    """Key-prefix renames ``(old, new, keys fitted)`` that turn ``unexpected`` keys into ``missing`` ones, best
    first: each unexpected key is paired with the missing keys sharing its longest dotted tail, and the
    differing heads vote for a rename."""
    by_tail: dict[str, list[str]] = {}
    for key in missing:
        parts = key.split(".")
        for i in range(1, len(parts)):
            by_tail.setdefault(".".join(parts[i:]), []).append(".".join(parts[:i]) + ".")
    votes: dict[tuple[str, str], int] = {}
    for key in unexpected:
        parts = key.split(".")
        for i in range(1, len(parts)):  # longest tail first
            heads = by_tail.get(".".join(parts[i:]))
            if heads:
                for head in heads[:3]:
                    pair = (".".join(parts[:i]) + ".", head)
                    votes[pair] = votes.get(pair, 0) + 1
                break
    missing_set = set(missing)
    scored = [(old, new, sum(1 for k in unexpected if k.startswith(old) and new + k[len(old):] in missing_set))
              for old, new in votes]
    return sorted(scored, key=lambda t: (-t[2], len(t[0])))


def rename_hint(missing: list[str], unexpected: list[str]) -> str:
    """The closest ``--rename OLD=NEW`` as a sentence for an error message, or '' when none fits any key."""
    best = closest_renames(missing, unexpected)[:1]
    if not best or best[0][2] == 0:
        return ""
    old, new, fitted = best[0]
    rest = "" if fitted == len(unexpected) else f" (the other {len(unexpected) - fitted} still differ)"
    return f"Closest key mapping: --rename {old}={new} fits {fitted} of {len(unexpected)} unexpected keys{rest}."



# What a derived checkpoint (pruned, shrunk, fine-tuned, quantized) does not inherit from its source:
# entries about that one file or the run that wrote it, and results measured on the source's outputs.
RUN_SPECIFIC_META = frozenset({"history", "epoch", "train_seconds", "prunekit_version", "round_record", "fingerprint",
                               "rounds", "finetuned_from", "stage"})
#: The meta keys of a test-split evaluation (:meth:`prunekit.evaluation.Metrics.as_test_meta` writes them).
TEST_META_KEYS = ("test_top1", "test_top5", "test_loss", "test_images")
MEASURED_META = frozenset({*TEST_META_KEYS, "best_val_top1"})


def derived_meta(meta: dict, keeps_outputs: bool = False) -> dict:
    """The one rule for what a checkpoint derived from another inherits: the source's meta without its
    run-specific entries (:data:`RUN_SPECIFIC_META`) and, unless the derivation provably keeps the model's
    outputs (e.g. shrinking masked filters away), without its measured results (:data:`MEASURED_META`)."""
    dropped = RUN_SPECIFIC_META if keeps_outputs else RUN_SPECIFIC_META | MEASURED_META
    return {k: v for k, v in (meta or {}).items() if k not in dropped}


def update_meta(path: str | Path, **entries: Any) -> Path:
    """Merge ``entries`` into the ``meta`` of the checkpoint at ``path`` (atomic rewrite, nothing else changes)."""
    raw = read_checkpoint_file(path)
    raw["meta"] = {**(raw.get("meta") or {}), **entries}
    return atomic_save(raw, path)
