"""The ``prunekit`` command line: one module per concern, one small function per subcommand.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)``; heavy imports (torch, models)
happen inside the command functions so ``prunekit --help`` is instant. ``main(argv)`` runs in-process,
which is how the end-to-end tests drive it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import sys
from pathlib import Path

COMMAND_MODULES = [
    "prunekit.cli.core",
    "prunekit.cli.ship",
    "prunekit.cli.prune",
    "prunekit.cli.plot",
    "prunekit.cli.analysis",
    "prunekit.cli.structured",
    "prunekit.cli.experiment",
    "prunekit.cli.binarize",
]


DEBUG_ENV = "PRUNEKIT_DEBUG"  # =1: show tracebacks instead of one-line errors (like --debug)

#: Subcommands that train or evaluate: they first fit torch's threads to the CPUs other work leaves free
COMPUTE_COMMANDS = {"train", "finetune", "evaluate", "convert", "prune", "prune-channels", "binarize", "quantize",
                    "compare", "sweep", "sensitivity", "run", "demo"}


def build_parser() -> argparse.ArgumentParser:
    from prunekit import __version__
    from prunekit.cli.common import ArgumentParser

    parser = ArgumentParser(
        prog="prunekit",
        description="Prune CIFAR convolutional networks and measure the result.",
    )
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an error (also: {DEBUG_ENV}=1); accepted anywhere")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand. Returns the exit status: 0 ok, 2 bad input, 130 interrupted.

    The one error boundary: a :class:`PrunekitError`, a pydantic validation error, an ``OSError`` (also one
    wrapped by torch, e.g. a full disk during ``torch.save``) and Ctrl-C at any moment become one line on
    stderr naming the problem and the fix; ``--debug`` (anywhere in ``argv``) or ``PRUNEKIT_DEBUG=1`` shows the
    traceback instead. Run-folder locks the command took (``args.exit_stack``) are released on the way out.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    command = next((a for a in argv if not a.startswith("-")), "")
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # argparse has printed usage and the error (or --help): return its status
            return exc.code if isinstance(exc.code, int) else 2
        refuse_empty_values(args)
        with contextlib.ExitStack() as stack:
            args.exit_stack = stack
            if args.command in COMPUTE_COMMANDS:
                fit_threads_to_machine(args)
            return args.func(args) or 0
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"prunekit {command}: interrupted; finished epochs/points and files already written are kept "
              "(rerun the same command to resume)", file=sys.stderr)
        return 130
    except Exception as exc:
        message = user_message(exc, vars(args) if "args" in locals() else {})
        if message is None or debug:
            raise
        print(f"prunekit {command}: error: {message}", file=sys.stderr)
        return 2


PATH_DESTS = {"out", "save", "name", "data", "resume", "weights", "ratios", "rewind_to", "teacher", "checkpoint",
              "run_dir", "csv", "experiment"}  # options and positionals that name a file or folder


def refuse_empty_values(args: argparse.Namespace) -> None:
    """PrunekitError naming the first option given as an empty string (``--out ''``): an empty path would
    otherwise mean the current folder or the default one, silently."""
    from prunekit.errors import PrunekitError

    for dest, value in vars(args).items():
        if value == "" and dest != "command":
            flag = POSITIONAL_NAMES.get(dest, f"--{dest.replace('_', '-')}")
            what = "name a file or folder" if dest in PATH_DESTS else "give it a value"
            raise PrunekitError(f"{flag} is empty (''); {what}, or leave the option out where it has a default")


def fit_threads_to_machine(args: argparse.Namespace) -> None:
    """Use only the CPUs other work leaves free (:func:`prunekit.measure.threads.fit_threads`), saying so in
    one line: on stdout with the command's other lines (stderr keeps errors to one line), on stderr when
    stdout is ``--json``."""
    from prunekit.measure.threads import fit_threads

    note = fit_threads()
    if note:
        print(f"prunekit {args.command}: {note}", file=sys.stderr if getattr(args, "json", False) else sys.stdout,
              flush=True)


def user_message(exc: BaseException, flags: dict) -> str | None:
    """The one-line message for an error the user can fix, or None for a bug (shown with its traceback)."""
    from prunekit.errors import PrunekitError

    if isinstance(exc, PrunekitError):
        return str(exc)
    if type(exc).__name__ == "ValidationError" and type(exc).__module__.startswith("pydantic"):
        return validation_message(exc)
    os_error = os_error_in(exc)
    if os_error is not None:
        return os_error_message(os_error, flags)
    return None


def validation_message(exc) -> str:
    """``--epochs -1: Input should be greater than or equal to 0`` for each invalid field."""
    parts = []
    for error in exc.errors():
        loc = ".".join(str(x) for x in error.get("loc", ()))
        name = f"--{loc.replace('_', '-')}" if loc and "." not in loc else loc or "value"
        parts.append(f"{name} {error.get('input')!r}: {error.get('msg')}")
    return "; ".join(parts) + " (see --help for the allowed values)"


def os_error_in(exc: BaseException) -> OSError | None:
    """The OSError (with an errno) that ``exc`` is or was raised from, e.g. the ENOSPC behind torch's
    ``enforce fail at inline_container.cc … unexpected pos``; None when there is none."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


FIXES = {
    errno.ENOSPC: "free space on that device or write elsewhere; files written before are intact",
    errno.EDQUOT: "free space within your quota or write elsewhere; files written before are intact",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "no permission: choose a folder you can write (or read) or fix its permissions",
    errno.EPERM: "no permission: choose a folder you can write (or read) or fix its permissions",
    errno.EEXIST: "a file of that name is in the way: choose another path or remove it",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
    errno.EISDIR: "that path is a folder: name a file inside it instead",
    errno.ENOENT: "check the path",
}


POSITIONAL_NAMES = {"checkpoint": "CKPT", "checkpoints": "CKPT", "run_dir": "RUN_DIR", "experiment": "EXPERIMENT",
                    "csv": "CSV"}


def os_error_message(error: OSError, flags: dict) -> str:
    """``--save runs/x: No space left on device (runs/x/last.pt); free space …``."""
    from prunekit.atomic import destination_of

    path = destination_of(error.filename) if error.filename is not None else None
    flag = flag_for(path, flags) if path else None
    where = f"{flag[0]} {flag[1]}: " if flag else ""
    what = f" ({path})" if path else ""
    reason = error.strerror or os.strerror(error.errno)
    fix = FIXES.get(error.errno, "check the path and try again")
    return f"{where}{reason}{what}; {fix}"


def flag_for(path: str, flags: dict) -> tuple[str, str] | None:
    """``(flag, value)`` of the argument whose value ``path`` is, lies inside, or is a parent of (``--out``,
    ``--save``, a positional ``CKPT``, …), the closest one; None when none is."""
    target = Path(os.path.abspath(path))
    best = None
    for dest, value in flags.items():
        if not isinstance(value, str) or not value or dest == "command":
            continue
        given = Path(os.path.abspath(value))
        if given == target or given in target.parents or target in given.parents:
            distance = abs(len(given.parts) - len(target.parts))
            if best is None or distance < best[2]:
                best = (POSITIONAL_NAMES.get(dest, f"--{dest.replace('_', '-')}"), value, distance)
    return best[:2] if best else None
