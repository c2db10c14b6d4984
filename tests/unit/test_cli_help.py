"""Every option of every subcommand explains itself in --help; deprecated spellings still work (issue 17)."""

from __future__ import annotations

import argparse

import pytest

from prunekit.cli import build_parser


def subparsers(parser: argparse.ArgumentParser, path: str = "prunekit"):
    """``(path, parser)`` for ``parser`` and every subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from subparsers(child, f"{path} {name}")


def test_every_option_of_every_subcommand_has_help():
    missing = [f"{path} {action.option_strings[0] if action.option_strings else action.dest}"
               for path, parser in subparsers(build_parser()) for action in parser._actions
               if not isinstance(action, (argparse._HelpAction, argparse._VersionAction))
               and not isinstance(action, argparse._SubParsersAction) and not action.help]
    assert missing == []


@pytest.mark.parametrize("argv, dest, value", [
    (["train", "--schedule", "step"], "schedule", "step"),
    (["finetune", "x.pt", "--schedule", "constant"], "schedule", "constant"),
    (["prune", "x.pt", "--sparsity", "0.5", "--out", "o", "--schedule", "iterative"], "prune_schedule", "iterative"),
])
def test_old_schedule_flag_is_a_deprecated_alias(argv, dest, value, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    new = "--prune-schedule" if dest == "prune_schedule" else "--lr-schedule"
    assert capsys.readouterr().err.strip() == f"prunekit: --schedule is deprecated, use {new}"


def test_new_schedule_flags_keep_their_meanings_apart(capsys):
    args = build_parser().parse_args(["prune", "x.pt", "--sparsity", "0.5", "--out", "o", "--prune-schedule",
                                      "iterative", "--lr-schedule", "step"])
    assert (args.prune_schedule, args.schedule) == ("iterative", "step") and capsys.readouterr().err == ""
    defaults = build_parser().parse_args(["train"])
    assert defaults.schedule == "cosine" and build_parser().parse_args(["prune", "x.pt", "--sparsity", "0.5", "--out",
                                                                        "o"]).prune_schedule == "oneshot"


def test_round_to_help_names_only_the_target_flags_its_command_has():
    helps = {path: next(a.help for a in parser._actions if "--round-to" in a.option_strings)
             for path, parser in subparsers(build_parser())
             if any("--round-to" in a.option_strings for a in parser._actions)}
    assert "--macs-target" not in helps["prunekit prune"] and "--latency-target" in helps["prunekit prune"]
    assert "--macs-target" in helps["prunekit prune-channels"] and "--latency-target" in helps["prunekit prune-channels"]
