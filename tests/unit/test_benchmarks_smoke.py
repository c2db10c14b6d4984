"""Every benchmark script takes ``--smoke`` (CI runs ``python benchmarks/X.py --smoke`` for each), checked
in-process through its ``--help``: cheap, and fails the day a new script forgets the flag."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def entry_point(script: Path) -> str | None:
    """The function the script's ``if __name__ == "__main__":`` block calls; None for a library module."""
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            calls = [c.func.id for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)]
            return next(name for name in calls if name not in {"exit", "print", "SystemExit"})
    return None


SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if entry_point(p))


def help_text(script: Path, monkeypatch) -> str:
    """What ``python SCRIPT --help`` prints, run in-process (the script's ``main`` under ``sys.argv``)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entry = getattr(module, entry_point(script))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        entry() if entry.__code__.co_argcount == 0 else entry(["--help"])
    assert exit_.value.code == 0
    return out.getvalue()


def test_the_scripts_are_found():
    assert {"demo", "recovery", "structured"} <= {p.stem for p in SCRIPTS}
    assert "common" not in {p.stem for p in SCRIPTS}  # a library module: running it does nothing


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_benchmark_takes_smoke(script, monkeypatch):
    assert "--smoke" in help_text(script, monkeypatch)


def test_ci_runs_every_benchmark_smoke_after_the_tests():
    run = (BENCHMARKS.parent / ".ci" / "run").read_text()
    tests, loop = run.index('bash -c "$command"'), run.index("for f in benchmarks/*.py")
    assert tests < loop and '"$f" --smoke' in run
