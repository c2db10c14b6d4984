"""Unstructured magnitude pruning: the weights with the smallest ``|w|`` are masked.

Three separate steps:

* scoring: ``|w|`` of the effective weight of each prunable layer (:func:`magnitude_scores`);
* allocation: how many weights go where: one global count over all layers in scope (``scope="global"``,
  one magnitude threshold), the same fraction in each layer (``scope="layer"``), one global count over
  LAMP scores (``scope="lamp"``, :func:`lamp_scores`), or a fraction per layer from a ratio file
  (``ratios``); :func:`prunekit.prune.allocate.round_fraction` for schedules;
* selection: the ``k`` smallest scores among the weights still alive (:func:`smallest`), with
  ``torch.topk`` exactly as ``torch.nn.utils.prune.L1Unstructured`` does, so ties break the same way.

Weights already masked count as pruned and are never selected again, so masks only shrink: a target
sparsity ``S`` over ``n`` weights means exactly ``ceil(S × n)`` masked weights in total (the fewest that
reach ``S``), of which the new mask adds ``ceil(S × n) − already_masked`` (none when the model is already
sparser than ``S``).
The classifier is spared unless ``include_classifier`` is set or a ratio file names it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from prunekit.config import PruneConfig, make_prune_config
from prunekit.errors import PrunekitError
from prunekit.models.layers import prunable_layers
from prunekit.prune.allocate import load_ratio_file, resolve_ratios, round_fraction, scoped_layers, target_count
from prunekit.prune.mask import Masks, apply_masks, is_masked
from prunekit.prune.sparsity import effective_weight


def magnitude_scores(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """``|w|`` of each module's effective weight, flattened and detached."""
    return {name: effective_weight(m).detach().abs().flatten() for name, m in modules.items()}


def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """Layer-adaptive magnitude scores (Lee et al. 2021, LAMP), flat, in the weight's flat order.

    With the layer's weights sorted so that ``|w_1| ≤ |w_2| ≤ … ≤ |w_n|``, the score of ``w_u`` is
    ``w_u² / Σ_{v ≥ u} w_v²``: its squared magnitude over the squared mass of itself and every larger
    weight of the same layer. Within a layer the order is that of ``|w|``; across layers the scores are
    comparable (the largest weight of every layer scores 1), which is what a global ranking needs. LAMP is
    therefore an allocation (how many weights each layer loses), which is why it is ``scope="lamp"``.
    Equal magnitudes are ordered by flat index (stable sort). An all-zero layer scores 0 everywhere.
    """
    squared = weight.detach().double().flatten() ** 2
    values, order = torch.sort(squared, stable=True)
    mass_from_here = values.flip(0).cumsum(0).flip(0)
    sorted_scores = torch.where(mass_from_here > 0, values / mass_from_here.clamp_min(1e-300), torch.zeros_like(values))
    scores = torch.empty_like(sorted_scores)
    scores[order] = sorted_scores
    return scores.float()


def alive(module: nn.Module) -> torch.Tensor:
    """Flat bool tensor: True where the weight is not masked yet (all True for an unmasked module)."""
    if is_masked(module):
        return module.weight_mask.detach().bool().flatten()
    return torch.ones(module.weight.numel(), dtype=torch.bool, device=module.weight.device)


def smallest(scores: torch.Tensor, kept: torch.Tensor, target_pruned: int) -> torch.Tensor:
    """New flat keep-mask: ``kept`` minus the lowest-scored alive entries, so exactly
    ``max(target_pruned, already pruned)`` entries are False.

    Selection is ``torch.topk(largest=False)`` on the alive scores in their flat order, which is what
    ``torch.nn.utils.prune`` computes (it also prunes only among entries its current mask keeps).
    """
    mask = kept.clone()
    k = target_pruned - int((~kept).sum())
    if k <= 0:
        return mask
    alive_idx = kept.nonzero().squeeze(1)
    chosen = torch.topk(scores[alive_idx], k, largest=False).indices
    mask[alive_idx[chosen]] = False
    return mask


def layer_mask(module: nn.Module, fraction: float) -> torch.Tensor:
    """Keep-mask of one layer with exactly ``ceil(fraction × n)`` of its ``n`` weights pruned (at least
    those already masked)."""
    scores = magnitude_scores({"": module})[""]
    return smallest(scores, alive(module), target_count(fraction, scores.numel())).view(module.weight.shape)


def global_masks(modules: dict[str, nn.Module], fraction: float, scoring: str = "magnitude") -> Masks:
    """One threshold over all ``modules``: exactly ``ceil(fraction × total)`` weights pruned in all.

    ``scoring``: ``magnitude`` (|w|) or ``lamp`` (:func:`lamp_scores` of each layer's effective weight)."""
    if scoring == "lamp":
        scores = torch.cat([lamp_scores(effective_weight(m)) for m in modules.values()])
    else:
        scores = torch.cat(list(magnitude_scores(modules).values()))
    kept = torch.cat([alive(m) for m in modules.values()])
    flat = smallest(scores, kept, target_count(fraction, scores.numel()))
    sizes = [m.weight.numel() for m in modules.values()]
    return {f"{name}.weight": part.view(m.weight.shape)
            for (name, m), part in zip(modules.items(), flat.split(sizes))}


def refuse_script_weights(model: nn.Module) -> None:
    """Raise for conv/linear weights inside TorchScript blocks: masks cannot be hooked into compiled code,
    and skipping them would report a sparsity the model does not have."""
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule):
            weights = [n for n, p in module.named_parameters() if n.endswith("weight") and p.dim() >= 2]
            if weights:
                raise PrunekitError(f"layer '{name}' is a TorchScript block holding {len(weights)} conv/linear weights "
                                    f"(e.g. {name}.{weights[0]}); prunekit cannot mask weights inside compiled code. "
                                    "Prune the Python model and script it afterwards")


def check_config(config: PruneConfig) -> None:
    if config.granularity != "unstructured":
        raise PrunekitError(f"unstructured_masks got granularity {config.granularity!r}; "
                            "use prunekit.prune.compute_masks to dispatch by granularity")
    config.check_target()


def unstructured_masks(model: nn.Module, config: PruneConfig, progress: float = 1.0) -> Masks:
    """Magnitude masks for ``model`` at ``progress`` ∈ (0, 1] of ``config``'s target; does not modify it.

    Returns ``{"<layer>.weight": bool tensor}`` (True = kept) for every layer in scope. The target at
    ``progress`` is ``round_fraction(target, progress)``, per layer for ratios. Existing masks are kept:
    every returned mask is a subset of the layer's current mask.
    """
    check_config(config)
    refuse_script_weights(model)
    layers = prunable_layers(model)
    if config.ratios is not None:
        fractions = resolve_ratios(model, config.ratios, config.include_classifier)
        return {f"{n}.weight": layer_mask(layers[n], round_fraction(r, progress)) for n, r in fractions.items()}
    scoped = scoped_layers(model, config.include_classifier, config.exclude)
    fraction = round_fraction(config.sparsity, progress)
    if config.scope == "layer":
        return {f"{n}.weight": layer_mask(m, fraction) for n, m in scoped.items()}
    return global_masks(scoped, fraction, "lamp" if config.scope == "lamp" else "magnitude")


def prune_unstructured(model: nn.Module, sparsity: float | None = None, ratios: dict | str | Path | None = None,
                       scope: str = "global", include_classifier: bool = False) -> Masks:
    """Mask the smallest-magnitude weights of any nn.Module; returns the masks it applied.

    ``sparsity`` is the fraction of the weights in scope to prune (``scope="global"``: one threshold over
    all prunable layers; ``"layer"``: that fraction in each; ``"lamp"``: one threshold over LAMP scores); ``ratios`` is a ``{layer: fraction}``
    mapping or the path of a YAML ratio file (``default`` for unnamed layers). The classifier is spared
    unless ``include_classifier`` or named in ``ratios``.

    Side effect: each pruned weight is re-parametrised in place (``weight_orig`` + ``weight_mask`` +
    forward pre-hook, see :func:`prunekit.prune.mask.apply_masks`). Call ``make_permanent`` to bake the
    zeros into plain parameters.
    """
    if isinstance(ratios, (str, Path)):
        ratios = load_ratio_file(ratios)
    config = make_prune_config(granularity="unstructured", sparsity=sparsity, ratios=ratios, scope=scope,
                               include_classifier=include_classifier)
    masks = unstructured_masks(model, config)
    apply_masks(model, masks)
    return masks
