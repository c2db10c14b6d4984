"""Stage numbers and time left for an experiment run: ``stage 2/5 · l1-filter-50 · 0:41 elapsed · ~1 min left``.

Every stage's cost is estimated up front in *work units*: one unit is one training image's forward and
backward pass; evaluating an image counts :data:`EVAL_COST` (a forward pass only). The seconds per unit are
measured on the training epochs run so far (their wall time includes evaluation and checkpoint writing),
so the time left is ``remaining units × measured seconds per unit``: an estimate from measured speed,
known after the first epoch (until then: "time left not measured yet"). Elapsed times count from the process's start (interpreter and imports too).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from prunekit.experiment.config import Experiment, VariantSpec
from prunekit.train.callbacks import Callback
from prunekit.train.estimate import EVAL_COST  # evaluating an image costs a third of training on it
#: Untimed + timed inference runs per model in the comparison (warm-up of prunekit.measure.timing).
TIMING_WARMUP = 10


@dataclass
class Stage:
    label: str
    work: float  # work units


@dataclass(frozen=True)
class Sizes:
    """Images per epoch of the run's data: trained on, and evaluated after every epoch."""

    train: int
    evaluated: int
    test: int

    def epochs(self, count: int) -> float:
        return count * (self.train + EVAL_COST * self.evaluated)


def plan_stages(experiment: Experiment, sizes: Sizes) -> list[Stage]:
    """The run's stages in order, each with its estimated work (see the module docstring)."""
    baseline = experiment.baseline
    trained = not (baseline.checkpoint or baseline.weights)
    stages = [Stage("training the baseline" if trained else "loading the baseline",
                    (sizes.epochs(baseline.train.epochs) if trained else 0) + EVAL_COST * sizes.test)]
    stages += [Stage(f"{variant.name}: {variant_steps(variant)}", variant_work(variant, sizes))
               for variant in experiment.variants]
    stages += [Stage(f"sweep of {sweep.source}", EVAL_COST * sizes.test * sweep.steps * (2 if sweep.zoom else 1))
               for sweep in experiment.sweeps]
    models = 1 + len(experiment.variants) + sum(v.quantize is not None for v in experiment.variants)
    compare = experiment.compare
    timed = (TIMING_WARMUP + compare.repeats) * (compare.batch_size + 1) if compare.timing else 0
    stages.append(Stage("plots and comparison", models * EVAL_COST * (sizes.test + timed)))
    stages.append(Stage("report", 0.0))
    return stages


def variant_steps(variant: VariantSpec) -> str:
    """``prune, fine-tune 3 epochs, int8``: what a variant stage does."""
    steps = []
    if variant.prune is not None:
        rounds = variant.prune.iterations if variant.prune.schedule == "iterative" else 1
        epochs = rounds * variant.prune.finetune_epochs
        steps.append(f"prune{f' ({rounds} rounds)' if rounds > 1 else ''}"
                     + (f", retrain {epochs} epoch{'s' * (epochs != 1)}" if epochs else ""))
    if variant.binarize is not None:
        steps.append(f"binarize, {variant.binarize.finetune_epochs} STE epoch(s)")
    if variant.finetune is not None:
        steps.append(f"fine-tune {variant.finetune.epochs} epoch{'s' * (variant.finetune.epochs != 1)}")
    if variant.quantize is not None:
        steps.append("int8")
    return ", ".join(steps) or "copy"


def variant_work(variant: VariantSpec, sizes: Sizes) -> float:
    """Work of one variant: its retraining epochs, an evaluation after each step, int8 calibration."""
    work = 0.0
    if variant.prune is not None:
        rounds = variant.prune.iterations if variant.prune.schedule == "iterative" else 1
        work += sizes.epochs(rounds * variant.prune.finetune_epochs) + rounds * 2 * EVAL_COST * sizes.test
    if variant.binarize is not None:
        work += sizes.epochs(variant.binarize.finetune_epochs) + 2 * EVAL_COST * sizes.test
    if variant.finetune is not None:
        work += sizes.epochs(variant.finetune.epochs) + EVAL_COST * sizes.test
    if variant.quantize is not None:
        work += EVAL_COST * (variant.quantize.calib_batches * variant.quantize.batch_size + sizes.test)
    return work


def process_seconds() -> float:
    """Seconds since this process started (interpreter start-up and imports included); Linux reads
    ``/proc``, elsewhere the time since this module was imported."""
    try:
        with open("/proc/self/stat") as f:
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def duration(seconds: float) -> str:
    """``0:41``, ``12:05``, ``1:02:09``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def time_left(seconds: float) -> str:
    """``~40 s left``, ``~3 min left``, ``~1.5 h left``."""
    if seconds < 90:
        return f"~{max(5, round(seconds / 5) * 5):.0f} s left"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min left"
    return f"~{seconds / 3600:.1f} h left"


class StageClock:
    """Numbers the stages of a run and estimates the time left from the measured training speed.

    ``begin(i)`` marks stage ``i`` (0-based) as started and the earlier ones as done, and prints its line;
    :meth:`epoch_callback` returns a training callback that measures the speed and prints a line per epoch.
    Prints through ``say`` (one line each)."""

    def __init__(self, stages: list[Stage], sizes: Sizes, say=print):
        self.stages, self.sizes, self.say = stages, sizes, say
        self.current = -1
        self.done = 0.0  # work units of the finished stages and epochs
        self.measured_work = 0.0
        self.measured_seconds = 0.0

    @property
    def total(self) -> float:
        return sum(stage.work for stage in self.stages)

    def seconds_left(self) -> float | None:
        if not self.measured_work:
            return None
        return max(0.0, self.total - self.done) * self.measured_seconds / self.measured_work

    def status(self, detail: str = "") -> str:
        stage = self.stages[self.current]
        left = self.seconds_left()
        return " · ".join(filter(None, [f"stage {self.current + 1}/{len(self.stages)}", stage.label, detail,
                                        f"{duration(process_seconds())} elapsed",
                                        time_left(left) if left is not None else "time left not measured yet"]))

    def begin(self, index: int) -> None:
        self.current = index
        self.done = sum(stage.work for stage in self.stages[:index])
        self.say(self.status())

    def epoch_done(self, seconds: float, detail: str) -> None:
        work = self.sizes.epochs(1)
        self.done = min(self.done + work, sum(stage.work for stage in self.stages[:self.current + 1]))
        self.measured_work += work
        self.measured_seconds += seconds
        self.say(self.status(detail))

    def epoch_callback(self) -> Callback:
        return _EpochClock(self)


class _EpochClock(Callback):
    """Times every training epoch (training, evaluation and checkpoint writing) for a :class:`StageClock`."""

    def __init__(self, clock: StageClock):
        self.clock = clock
        self.epochs = 0
        self.last = time.perf_counter()

    def on_fit_start(self, model, config) -> None:
        self.epochs = config.epochs
        self.last = time.perf_counter()

    def on_epoch_end(self, epoch: int, record: dict) -> None:
        now = time.perf_counter()
        self.clock.epoch_done(now - self.last, f"epoch {epoch + 1}/{self.epochs}")
        self.last = now
