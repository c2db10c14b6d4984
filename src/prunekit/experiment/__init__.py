"""Experiments from one YAML file: the stages of a pruning study, resumable, ending in a report."""

from prunekit.experiment.config import Experiment, load_experiment
from prunekit.experiment.runner import Run, load_run_data, run_experiment, run_folder

__all__ = ["Experiment", "Run", "load_experiment", "load_run_data", "run_experiment", "run_folder"]
