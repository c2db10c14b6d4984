"""Allocation: how much to prune where. Ratio files, their validation, and schedule fractions."""

from __future__ import annotations

import difflib
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
    """Check layer names and ratio values; expand ``default`` to every unnamed valid layer.

    Unknown names raise an error listing the valid names and the closest match. Returns
    ``{layer_name: ratio}`` for every layer with a ratio (named or via ``default``).
    """
    valid = list(valid_names)
    if not isinstance(ratios, dict) or not ratios:
        raise PrunekitError("a ratio file must map layer names to ratios, e.g. `features.0: 0.5` or `default: 0.8`")
    resolved: dict[str, float] = {}
    for name, ratio in ratios.items():
        if name == "default":
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
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PrunekitError(f"ratio file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PrunekitError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PrunekitError(f"{path} must be a mapping of layer names to ratios")
    return data


def round_fraction(target: float, progress: float) -> float:
    """The fraction to have pruned after ``progress`` ∈ (0, 1] of an iterative schedule.

    Each of K rounds prunes the same fraction of the *remaining* weights, so after round k of K the
    pruned fraction is ``1 - (1 - target) ** (k / K)`` and the last round lands exactly on ``target``.
    """
    if progress >= 1.0:
        return target
    return 1.0 - (1.0 - target) ** progress
