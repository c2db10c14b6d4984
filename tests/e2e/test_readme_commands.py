"""Every ``prunekit …`` command the README shows runs as pasted, against ../shared and offline.

The commands are read from the README itself (its ``bash`` blocks, continuation lines joined, and inline
code spans that carry flags). Each one is either run here, in-process with a tiny budget, or skipped with
the reason written below, so a new README command fails :func:`test_every_readme_command_is_run_or_skipped`
until it is placed. Running a command: optional ``[…]`` parts are dropped, the first of ``a|b`` choices and
of a ``(x | y)`` group is taken, placeholders (``DIR``, ``CKPT``, ``BASE.pt`` …) name files made by earlier
commands or the shared data, ``../shared`` is the shared folder, and the budget flags below are appended
(argparse keeps the last value, so ``--epochs 1`` after ``--epochs 160`` wins).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import PRETRAINED, REAL_DATA, ROOT, SHARED, needs_shared

TINY = ["--model-cfg", "8,M,16,M,16", "--epochs", "1", "--limit-train", "64", "--no-progress"]

#: README command prefix → budget flags appended; run in this order (later ones read earlier ones' files)
RUN = {
    "prunekit models": [],
    "prunekit train --model vgg11 --dataset cifar10 --data DIR --save runs/vgg11": TINY,
    "prunekit train --resume runs/vgg11/last.pt": ["--epochs", "2", "--no-progress"],
    "prunekit evaluate runs/vgg11/last.pt": [],
    "prunekit info runs/vgg11/last.pt": [],
    "prunekit profile runs/vgg11/last.pt": ["--repeats", "2"],
    "prunekit evaluate --model resnet56 --weights resnet56-4bfd9763.th": [],
    "prunekit evaluate --model resnet56 --weights ../shared/": [],
    "prunekit convert --model resnet56 --weights resnet56-4bfd9763.th": [],
    "prunekit layers CKPT": [],
    "prunekit prune CKPT --granularity unstructured --sparsity 0.8": ["--finetune-epochs", "1", "--no-progress"],
    "prunekit prune CKPT --granularity filter --sparsity 0.4": ["--finetune-epochs", "0", "--no-progress"],
    "prunekit finetune CKPT": ["--epochs", "1", "--no-progress", "--save", "runs/ft"],
    "prunekit sparsity CKPT": [],
    "prunekit prune-channels CKPT": [],
    "prunekit latency CKPT": [],
    "prunekit latency --model resnet56": [],
    "prunekit prune CKPT --granularity filter --latency-target 0.5": ["--finetune-epochs", "0", "--no-progress",
                                                                      "--out", "pruned/latency"],
    "prunekit profile PRUNED.pt --runtime sparse": ["--repeats", "2"],
    "prunekit compare BASE.pt PRUNED.pt": ["--repeats", "2"],
    "prunekit sweep CKPT": ["--steps", "2"],
    "prunekit sensitivity CKPT": ["--sparsities", "0.5"],
    "prunekit plot accuracy-sparsity": [],
    "prunekit plot mask CKPT": [],
    "prunekit plot hist CKPT": [],
    "prunekit plot layers CKPT": [],
    "prunekit export CKPT --format compact": [],
    "prunekit quantize CKPT": ["--calib-batches", "1"],
    "prunekit export CKPT --format onnx": [],
    "prunekit binarize CKPT": ["--finetune-epochs", "0", "--no-progress"],
    "prunekit train --model vgg11 --data ../shared/": TINY + ["--save", "runs/results-train"],
    "prunekit profile --model vgg11 --count thop": ["--no-timing"],
}

USER_MODEL = "needs your own model file (tests/e2e/test_user_model_cli.py runs user models)"
#: README command prefix → why it is not run here
SKIP = {
    "prunekit convert --model models/net.py:Net": USER_MODEL,
    "prunekit train --model mypackage.models:make_net": USER_MODEL,
    "prunekit evaluate net.pt": USER_MODEL,
    "prunekit prune-channels net.pt": USER_MODEL,
    "prunekit prune-channels --model timm:resnet18d": "needs timm, not importable with CPU torch here "
                                                      "(tests/e2e/test_library_models.py runs it where it imports)",
    "prunekit convert --model vgg19 --weights model_best.pth.tar": "another code base's file, not in ../shared",
    "prunekit prune CKPT --granularity unstructured --ratios ratios.yaml": "needs your ratio file",
    "prunekit prune CKPT …": "'…' stands for the flags of the lines above",
    "prunekit train --model vgg11 --sparsity-reg": "'…' stands for the flags of the train line",
    "prunekit shrink ROUND.pt": "needs a round file of a filter run (tests/e2e/test_prune_cli.py)",
    "prunekit plot sweep FILE.csv": "needs a sweep's CSV (tests/e2e/test_cli.py plots one)",
    "prunekit plot sensitivity FILE.csv": "needs a sensitivity CSV",
    "prunekit report RUN_DIR": "needs an experiment's run folder (tests/e2e/test_report_cli.py)",
    "prunekit export runs/bin/": "the file name is elided ('….pt')",
    "prunekit run experiments/": "minutes even with --quick (tests/e2e/test_experiment.py runs experiments)",
    "prunekit demo": "minutes (tests/e2e/test_demo.py runs it with a tiny budget)",
}

#: placeholder → file (relative: made by an earlier command in the working folder)
PLACEHOLDERS = {"DIR": str(REAL_DATA), "CKPT": "runs/vgg11/last.pt", "BASE.pt": "runs/vgg11/last.pt",
                "PRUNED.pt": "small.pt", "A.pt": "runs/vgg11/last.pt", "B.pt": "runs/ft/last.pt",
                "resnet56-4bfd9763.th": str(PRETRAINED / "resnet56-4bfd9763.th")}


def readme_commands(text: str) -> list[str]:
    """The README's commands: lines of ``bash`` blocks starting with ``prunekit`` (continuations joined,
    ``#`` comments dropped, ``a  |  b`` lines split in two) and inline ``prunekit …`` spans with flags."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s#.*", "", line).strip()
            if line.startswith("prunekit "):
                line = re.sub(r"\(([^()|]*?)\s*\|[^()]*\)", r"\1", line)  # (x | y): the first alternative
                commands += [c if c.startswith("prunekit ") else f"prunekit {c}"
                             for c in re.split(r"\s{2,}\|\s{2,}", line)]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    commands += [span for span in re.findall(r"`(prunekit [^`]+)`", prose) if " --" in span]
    return [" ".join(c.split()) for c in commands]


def placed(command: str) -> str | None:
    """The RUN or SKIP key that ``command`` starts with (the longest one), None when it has none."""
    keys = [k for k in (*RUN, *SKIP) if command.startswith(k)]
    return max(keys, key=len) if keys else None


def argv_of(command: str) -> list[str]:
    """The argv that ``main`` runs for a README command (see the module docstring)."""
    while re.search(r"\[[^\[\]]*\]", command):
        command = re.sub(r"\s*\[[^\[\]]*\]", "", command)
    argv = []
    for token in shlex.split(command)[1:]:
        if token == "…":
            continue
        token = PLACEHOLDERS.get(token, token)
        token = token.replace("../shared", str(SHARED)) if token.startswith("../shared") else token
        argv.append(token.split("|")[0] if "|" in token and not token.startswith("-") else token)
    return argv + RUN[placed(command)]


README_COMMANDS = readme_commands((ROOT / "README.md").read_text())


def test_the_readme_parser_finds_the_commands():
    assert "prunekit models" in README_COMMANDS
    assert any(c.startswith("prunekit plot hist CKPT") for c in README_COMMANDS)  # split off a `a | b` line
    assert any(c.startswith("prunekit prune-channels CKPT --ratio 0.3 ") for c in README_COMMANDS)


def test_every_readme_command_is_run_or_skipped():
    unplaced = [c for c in README_COMMANDS if placed(c) is None]
    assert not unplaced, f"README commands neither run nor skipped (add them to RUN or SKIP here): {unplaced}"
    unused = [k for k in (*RUN, *SKIP) if not any(placed(c) == k for c in README_COMMANDS)]
    assert not unused, f"RUN/SKIP entries that match no README command (the README changed?): {unused}"


def test_placeholders_and_choices_become_a_runnable_argv():
    argv = argv_of("prunekit prune CKPT --granularity unstructured --sparsity 0.8 --scope global|layer|lamp "
                   "--finetune-epochs 30 [--rewind-to x.pt] --out pruned/omp80/")
    assert argv == ["prune", "runs/vgg11/last.pt", "--granularity", "unstructured", "--sparsity", "0.8", "--scope",
                    "global", "--finetune-epochs", "30", "--out", "pruned/omp80/", "--finetune-epochs", "1",
                    "--no-progress"]


@needs_shared
def test_the_readme_commands_run_as_pasted(tmp_path, monkeypatch, capsys):
    """Each placed command in RUN order; offline (the data is ../shared's); fails naming the command."""
    from prunekit.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PRUNEKIT_DATA", raising=False)
    by_key = {}
    for command in README_COMMANDS:
        by_key.setdefault(placed(command), command)
    for key in RUN:
        if key == "prunekit export CKPT --format onnx":
            pytest.importorskip("onnx")
        argv = argv_of(by_key[key])
        code = main(argv)
        captured = capsys.readouterr()
        assert code == 0, f"README command failed: {by_key[key]}\n  ran: prunekit {shlex.join(argv)}\n{captured.err}"
    assert Path("runs/vgg11/last.pt").is_file() and Path("small.pt").is_file() and Path("r56.pt").is_file()
    assert len(list(Path("pruned/omp80").glob("Omp_unstructured_0.80_*.pt"))) == 1
    assert len(list(Path("pruned/filter40").glob("Omp_filter_0.4*.pt"))) == 1
