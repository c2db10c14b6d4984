"""Allocation: how much to prune where. Ratio files, their validation, and schedule fractions."""

from __future__ import annotations

import difflib
import fnmatch
from pathlib import Path
from typing import Iterable

from prunekit.errors import PrunekitError


def check_ratio(name: str, ratio) -> float:
    """A pruning ratio must be a number in [0, 1): pruning a whole layer would disconnect the network."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise PrunekitError(f"ratio for {name!r} must be a number in [0, 1), got {ratio!r}")
    if not 0.0 <= float(ratio) < 1.0:
        raise PrunekitError(f"ratio for {name!r} is {ratio}; ratios must lie in [0, 1) (0.8 prunes 80%)")
    return float(ratio)


def validate_ratios(ratios: dict, valid_names: Iterable[str]) -> dict[str, float]:
    """Check layer names and ratio values; expand patterns and ``default``.

    A key is an exact layer name or a glob pattern (``layer1.*.conv1``); exact names win over patterns,
    and ``default`` applies to every layer left unnamed. An unknown name (or a pattern that matches
    nothing) raises an error listing the valid names and the closest match. Returns
    ``{layer_name: ratio}`` for every layer with a ratio.
    """
    valid = list(valid_names)
    if not isinstance(ratios, dict) or not ratios:
        raise PrunekitError("a ratio file must map layer names to ratios, e.g. `features.0: 0.5` or `default: 0.8`")
    patterns = {k: v for k, v in ratios.items() if k != "default" and any(c in str(k) for c in "*?[")}
    resolved: dict[str, float] = {}
    for pattern, ratio in patterns.items():
        matched = fnmatch.filter(valid, str(pattern))
        if not matched:
            raise PrunekitError(f"pattern {pattern!r} in ratios matches no layer. Valid layers: {', '.join(valid)}")
        resolved.update(dict.fromkeys(matched, check_ratio(str(pattern), ratio)))
    for name, ratio in ratios.items():
        if name == "default" or name in patterns:
            continue
        if name not in valid:
            close = difflib.get_close_matches(str(name), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise PrunekitError(f"unknown layer {name!r} in ratios.{hint} Valid layers: {', '.join(valid)} "
                                "(`prunekit layers CKPT` lists them)")
        resolved[name] = check_ratio(name, ratio)
    if "default" in ratios:
        default = check_ratio("default", ratios["default"])
        for name in valid:
            resolved.setdefault(name, default)
    return resolved


def load_ratio_file(path: str | Path) -> dict:
    """Read a YAML ratio file (``layer: ratio`` entries, optional ``default``) without validating names."""
    from prunekit.config import read_yaml_mapping

    return read_yaml_mapping(path, "ratio file")


def round_fraction(target: float, progress: float) -> float:
    """The fraction to have pruned after ``progress`` ∈ (0, 1] of an iterative schedule.

    Each of K rounds prunes the same fraction of the *remaining* weights, so after round k of K the
    pruned fraction is ``1 - (1 - target) ** (k / K)`` and the last round lands exactly on ``target``.
    """
    if progress >= 1.0:
        return target
    return 1.0 - (1.0 - target) ** progress
