"""The name of every artefact a run writes, in one place (as open_lth's ``paths``).

Training (``fit``) in a run folder::

    RUN/last.pt  RUN/best.pt  RUN/epoch_<N>.pt  RUN/metrics.csv  RUN/metrics.json  RUN/config.json

A pruning schedule (``pipeline.run_pruning``) in ``OUT/<work name>/``, one folder per round::

    OUT/<work name>/round_<k>/last.pt   fit's resumable state while retraining
    OUT/<work name>/round_<k>/round.pt  the finished round

An experiment (``prunekit run``) in ``RUN/``: see :mod:`prunekit.experiment.runner`; its stage files are
named here too. Only the standard library (and prunekit.errors) is imported.
"""

from __future__ import annotations

from pathlib import Path

LAST = "last.pt"
BEST = "best.pt"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
TRAIN_CONFIG = "config.json"
ROUND_PREFIX = "round_"
ROUND_DONE = "round.pt"
BASELINE = "00_baseline.pt"


# --- a training run folder --------------------------------------------------------------------------------

def last(run_dir: str | Path) -> Path:
    """The resumable checkpoint ``fit`` rewrites after every epoch."""
    return Path(run_dir) / LAST


def best(run_dir: str | Path) -> Path:
    """The checkpoint of the best validation epoch."""
    return Path(run_dir) / BEST


def epoch_snapshot(run_dir: str | Path, epoch: int) -> Path:
    """``epoch_<N>.pt`` kept by ``--save-every-epoch`` (``epoch`` counts from 1)."""
    return Path(run_dir) / f"epoch_{epoch}.pt"


def metrics_csv(run_dir: str | Path) -> Path:
    return Path(run_dir) / METRICS_CSV


def metrics_json(run_dir: str | Path) -> Path:
    return Path(run_dir) / METRICS_JSON


def train_config(run_dir: str | Path) -> Path:
    return Path(run_dir) / TRAIN_CONFIG


# --- a pruning schedule ------------------------------------------------------------------------------------

def checked_name(name: str) -> str:
    """A result's chosen name (``--name``) without ``.pt``, checked to be a plain file name, so the result and
    its work folder stay inside the output folder. Raises PrunekitError for a path (``../x``, ``a/b``) or an
    empty name."""
    from prunekit.errors import PrunekitError

    stem = name.removesuffix(".pt")
    if stem in ("", ".", "..") or "/" in stem or "\\" in stem or Path(stem).is_absolute():
        raise PrunekitError(f"--name {name!r} is not a plain file name; give a name without folders (e.g. "
                            "pruned80): the result is written into --out, choose the folder there")
    return stem


def round_dir(work: str | Path, k: int) -> Path:
    """The folder of round ``k`` (from 1) of the pruning run in ``work``."""
    return Path(work) / f"{ROUND_PREFIX}{k}"


def round_done(round_folder: str | Path) -> Path:
    """The checkpoint that marks a round finished."""
    return Path(round_folder) / ROUND_DONE


def finished_rounds(out_dir: str | Path) -> list[Path]:
    """The finished round checkpoints of every pruning run written in ``out_dir``, ordered by round."""
    found = Path(out_dir).glob(f"*/{ROUND_PREFIX}*/{ROUND_DONE}")
    return sorted(found, key=lambda p: int(p.parent.name.removeprefix(ROUND_PREFIX)))


# --- an experiment folder ----------------------------------------------------------------------------------

def models(run_folder: str | Path) -> Path:
    return Path(run_folder) / "models"


def work(run_folder: str | Path) -> Path:
    return Path(run_folder) / "work"


def plots(run_folder: str | Path) -> Path:
    return Path(run_folder) / "plots"


def baseline(run_folder: str | Path) -> Path:
    return models(run_folder) / BASELINE


def variant_dir(run_folder: str | Path, variant: str) -> Path:
    """``RUN/models/<variant>/``: the variant's checkpoints under the names the pipeline gives them
    (``Omp_filter_0.40_acc_91.20.pt``, its ``…_int8.pt``), so required file names stay exact."""
    return models(run_folder) / variant


def variant_of(checkpoint: str | Path) -> str:
    """The variant a run's checkpoint belongs to: ``baseline`` for ``models/00_baseline.pt``, else the name
    of its ``models/<variant>/`` folder (a file directly in ``models/``: its stem), with `` int8`` for the
    variant's ``…_int8.pt`` file."""
    path = Path(checkpoint)
    if path.name == BASELINE:
        return "baseline"
    name = path.parent.name if path.parent.name != "models" else path.stem
    return name + " int8" if path.stem.endswith("_int8") else name


def variant_record(run_folder: str | Path, variant: str) -> Path:
    """The JSON record that marks a variant finished."""
    return models(run_folder) / f"{variant}.json"
