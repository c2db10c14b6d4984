"""Masks as values (re-exported): the mechanics live in :mod:`prunekit.masking`, below ``prune``,
``checkpoint``, ``measure``, ``export`` and ``train``, so those never import the pruning package."""

from prunekit.masking import (Masks, apply_masks, effective_state_dict, effective_weight, extract_masks,  # noqa: F401
                              has_masks, is_masked, make_permanent, masked_keys, masked_names, permanent_copy,
                              sparsity_of, split_param_name, validate_mask)
