"""User-facing lists of names come from their registries: no help text, docstring or doc page spells out a
set of criteria, scopes or count conventions that differs from the registry."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

import prunekit
from prunekit.cli import build_parser
from prunekit.config import ALL_SCOPES, SCOPES, PruneConfig, make_prune_config
from prunekit.errors import PrunekitError
from prunekit.measure.counts import CONVENTIONS
from prunekit.prune.importance import CRITERIA

PACKAGE = Path(prunekit.__file__).parent
ROOT = PACKAGE.parents[1]


def every_help_text() -> dict[str, str]:
    """{"prunekit prune": its formatted --help, ...} for every command and subcommand."""
    texts, todo = {}, [("prunekit", build_parser())]
    while todo:
        name, parser = todo.pop()
        texts[name] = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
    return texts


def source_strings() -> dict[str, str]:
    """Every string constant (docstrings, help literals, descriptions) of the package, and the docs."""
    texts = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                texts[f"{path.relative_to(PACKAGE)}:{node.lineno}"] = node.value
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        texts[str(path.relative_to(ROOT))] = path.read_text()
    return texts


def named_sets(text: str, registry) -> list[set[str]]:
    """Runs like ``a | b | c`` or ``a, b, c`` in ``text`` that name at least two (three for commas) names of
    ``registry``: the sets of names they spell out."""
    text = re.sub(r"\s+", " ", text.replace("`", ""))
    found = []
    for separator, least in ((r" ?\| ?", 2), (r", (?:or |and )?", 3)):
        for match in re.finditer(rf"[\w-]+(?:{separator}[\w-]+){{{least - 1},}}", text):
            names = set(re.split(separator, match.group()))
            if len(names & set(registry)) >= least:
                found.append(names)
    return found


@pytest.mark.parametrize("registry", [CRITERIA, CONVENTIONS, ALL_SCOPES], ids=["criteria", "conventions", "scopes"])
def test_no_help_text_docstring_or_doc_spells_out_a_stale_list(registry):
    names = set(registry)
    stale = {where: sorted(found) for source in (every_help_text(), source_strings())
             for where, text in source.items() for found in named_sets(text, names)
             if found & names != names and not (found & names <= set(SCOPES["filter"]) and "filter" in text)}
    assert not stale, f"lists that differ from the registry ({sorted(names)}): {stale}"


def test_help_lists_every_registered_criterion_and_convention():
    helps = every_help_text()
    criteria = " | ".join(CRITERIA)
    for command in ("prunekit prune", "prunekit prune-channels", "prunekit sweep", "prunekit sensitivity"):
        assert criteria in re.sub(r"\s+", " ", helps[command]), command
    assert " | ".join(CONVENTIONS) in re.sub(r"\s+", " ", helps["prunekit profile"])


def test_scope_choices_come_from_the_config():
    helps = every_help_text()
    assert "--scope {" + ",".join(SCOPES["filter"]) + "}" in helps["prunekit prune-channels"]
    assert "--scope {" + ",".join(ALL_SCOPES) + "}" in helps["prunekit prune"]
    assert PruneConfig(granularity="filter", sparsity=0.5).scope == SCOPES["filter"][0]
    with pytest.raises(PrunekitError, match="scope 'lamp'.*granularity filter.*layer, global"):
        make_prune_config(granularity="filter", sparsity=0.5, scope="lamp")
    with pytest.raises(PrunekitError, match="scope 'everywhere'"):
        make_prune_config(sparsity=0.5, scope="everywhere")


def test_a_stale_list_is_found():
    assert named_sets("filter score: l1 | l2 | bn_scale | random", CRITERIA) == [{"l1", "l2", "bn_scale", "random"}]
    assert named_sets("one of macs, flops, thop", CONVENTIONS) == [{"macs", "flops", "thop"}]
