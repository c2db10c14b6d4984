"""The ``prunekit`` command line: one module per concern, one small function per subcommand.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)``; heavy imports (torch, models)
happen inside the command functions so ``prunekit --help`` is instant. ``main(argv)`` runs in-process,
which is how the end-to-end tests drive it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "prunekit.cli.core",
    "prunekit.cli.ship",
    "prunekit.cli.prune",
    "prunekit.cli.report",
    "prunekit.cli.structured",
    "prunekit.cli.experiment",
    "prunekit.cli.binarize",
]


def build_parser() -> argparse.ArgumentParser:
    from prunekit import __version__

    parser = argparse.ArgumentParser(
        prog="prunekit",
        description="Prune CIFAR convolutional networks and measure the result.",
    )
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand. Returns the exit status: 0 ok, 2 bad input, 130 interrupted."""
    from prunekit.errors import PrunekitError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except PrunekitError as exc:
        print(f"prunekit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"prunekit {args.command}: interrupted; finished epochs/points are saved", file=sys.stderr)
        return 130
