"""The shared CLI flag builders and the one CIFAR image shape (issue 24): each shared flag is defined in
cli/common.py only, numeric types reject bad values in one line, the example input is what it says."""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import prunekit.cli
from prunekit.cli.common import POSITIVE_FLOAT, number
from prunekit.images import EXAMPLE_INPUT_SIZE, IMAGE_SHAPE, example_input

CLI = Path(prunekit.cli.__file__).parent
SHARED_FLAGS = {"--out", "--json", "--no-progress", "--split", "--granularity", "--device", "checkpoint"}
LIST_FLAGS = ["analysis.py: --device"]  # compare/report take a comma list of devices (DEV[,DEV]), not one


def flags_defined_outside_common() -> list[str]:
    """``file: flag`` for each ``add_argument(FLAG, …)`` of a shared flag in a CLI module other than common.py."""
    found = []
    for path in sorted(CLI.glob("*.py")):
        if path.name == "common.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument" and node.args
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value in SHARED_FLAGS):
                found.append(f"{path.name}: {node.args[0].value}")
    return found


def test_shared_flags_are_defined_by_the_builders_of_cli_common_only():
    assert flags_defined_outside_common() == LIST_FLAGS


def test_number_names_the_value_and_the_allowed_range():
    weight = number(float, 0, 1, meaning="a weight")
    assert weight("0") == 0.0 and weight("1") == 1.0  # closed interval: both ends allowed
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'2' is not a weight in \[0, 1\]$"):
        weight("2")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'x' is not a weight in \[0, 1\]$"):
        weight("x")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^must be a finite number > 0, got 'inf'$"):
        POSITIVE_FLOAT("inf")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^must be a finite number > 0, got '0'$"):
        POSITIVE_FLOAT("0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^must be an integer >= 1, got '1.5'$"):
        number(int, 1)("1.5")


def test_example_input_is_one_zero_cifar_image_batch():
    assert IMAGE_SHAPE == (3, 32, 32) and EXAMPLE_INPUT_SIZE == (1, 3, 32, 32)
    x = example_input()
    assert tuple(x.shape) == (1, 3, 32, 32) and x.dtype.is_floating_point and not x.any()
    assert tuple(example_input(4).shape) == (4, 3, 32, 32)


def test_the_image_shape_module_imports_without_torch():
    code = "import sys, prunekit.images; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(CLI.parents[1])})
    assert result.stdout.strip() == "False"
