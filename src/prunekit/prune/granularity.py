"""Granularities as method objects: what a :class:`~prunekit.config.PruneConfig` target counts and how it
becomes masks. One registry (:data:`GRANULARITIES`); the pipeline, the analyses and the CLI ask it instead of
branching on the name.

* ``unstructured``: single weights by ``|w|`` (:mod:`prunekit.prune.unstructured`); the target counts conv +
  linear weights.
* ``filter``: whole conv filters and everything coupled to them (:mod:`prunekit.prune.channels`); the target
  counts conv filters; the masked model is shrunk physically at the end of a run.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from prunekit.config import DEFAULT_SCOPE, TARGETS, PruneConfig
from prunekit.errors import PrunekitError
from prunekit.masking import Masks


class Granularity:
    """How one kind of structure is pruned. Subclasses set ``name`` and ``unit`` and implement the methods."""

    name: str = ""
    unit: str = ""  # what a sparsity target counts, for labels: "weights" | "filters"
    shrinks: bool = False  # whether a finished run removes the zeroed structures physically

    @property
    def default_scope(self) -> str:
        return DEFAULT_SCOPE[self.name]

    @property
    def targets(self) -> tuple[str, ...]:
        return TARGETS[self.name]

    def masks(self, model: nn.Module, config: PruneConfig, progress: float, example_inputs: Any,
              batches=None) -> Masks:
        """The masks ``config`` asks for at ``progress`` ∈ (0, 1] of its target; does not modify ``model``.
        ``batches`` (labelled ``(inputs, labels)``) feed data-driven criteria."""
        raise NotImplementedError

    def achieved(self, model: nn.Module) -> dict:
        """What a round record adds about the model as pruned so far (e.g. the filter sparsity)."""
        return {}

    def rate_label(self, include_classifier: bool) -> str:
        """The axis label of a pruning rate of this granularity."""
        raise NotImplementedError

    def ratio_layers(self, model: nn.Module, example_inputs: Any, include_classifier: bool = False) -> list[str]:
        """The layer names a ratio file of this granularity may set (sensitivity scans analyse these)."""
        raise NotImplementedError


class Unstructured(Granularity):
    name, unit = "unstructured", "weights"

    def masks(self, model, config, progress, example_inputs, batches=None):
        from prunekit.prune.unstructured import unstructured_masks

        return unstructured_masks(model, config, progress)

    def rate_label(self, include_classifier):
        spared = "" if include_classifier else ", classifier spared"
        return f"pruning rate (% of conv + linear weights{spared})"

    def ratio_layers(self, model, example_inputs, include_classifier=False):
        from prunekit.prune.allocate import scoped_layers

        return list(scoped_layers(model, include_classifier))


class Filter(Granularity):
    name, unit, shrinks = "filter", "filters", True

    def masks(self, model, config, progress, example_inputs, batches=None):
        from prunekit.prune.channels import filter_masks

        return filter_masks(model, example_inputs, config, progress, batches)

    def achieved(self, model):
        from prunekit.prune.channels import filter_sparsity

        return {"filter_sparsity": filter_sparsity(model, model)}  # zeroed filters / all conv filters

    def rate_label(self, include_classifier):
        return "pruning rate (% of conv filters)"

    def ratio_layers(self, model, example_inputs, include_classifier=False):
        from prunekit.prune.graph import trace_channels

        graph = trace_channels(model, example_inputs)
        return [conv for group in graph.groups if graph.prunable(group) for conv in group.producers]


GRANULARITIES: dict[str, Granularity] = {g.name: g for g in (Unstructured(), Filter())}


def get_granularity(name: str) -> Granularity:
    """The registered granularity ``name``; a PrunekitError listing the registered ones otherwise."""
    try:
        return GRANULARITIES[name]
    except KeyError:
        raise PrunekitError(f"unknown granularity {name!r}; choose one of {', '.join(GRANULARITIES)}") from None
