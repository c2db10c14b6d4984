"""CPU threads that fit the machine: when other work holds cores, train and evaluate with the free ones.

Why: torch runs its intra-op work on every core by default and each parallel operation waits for its
slowest thread. On a 2-core machine where one other single-threaded job runs, the thread that shares a core
with that job stalls every operation: a demo measured 3× slower or worse with two threads than with one.
So a command that computes first samples the machine (:func:`prunekit.measure.timing.machine_load`) and
lowers torch's thread count to the CPUs the other work leaves free. ``OMP_NUM_THREADS`` (the variable
torch itself reads) is the user's explicit choice and is never overridden.
"""

from __future__ import annotations

import os

import torch

from prunekit.measure.timing import MachineLoad, machine_load

#: The environment variable that states the user's own thread count (read by torch at start-up).
THREADS_ENV = "OMP_NUM_THREADS"
#: Seconds :func:`fit_threads` samples the machine for (short: every computing command pays it once).
PROBE_SECONDS = 0.1


def free_cpus(load: MachineLoad) -> int:
    """Whole CPUs the other work leaves free, at least 1: a CPU more than half used by others is taken.

    ``busy_cpus`` (from ``/proc/stat``) is the measure; the 1-minute load average stands in without it."""
    others = load.busy_cpus if load.busy_cpus is not None else (load.load1 or 0.0)
    return max(1, min(load.cpus, round(load.cpus - others)))


def fit_threads(load: MachineLoad | None = None) -> str | None:
    """Lower torch's CPU thread count to :func:`free_cpus` of ``load`` (sampled now when None) and return
    the one-line note that says so; None when nothing changed (a quiet machine, one thread already, or
    ``OMP_NUM_THREADS`` set by the user).

    Side effect: ``torch.set_num_threads`` for the rest of the process; never raises the count."""
    current = torch.get_num_threads()
    if os.environ.get(THREADS_ENV) or current <= 1:
        return None
    load = load or machine_load(PROBE_SECONDS)
    threads = min(current, free_cpus(load))
    if threads >= current:
        return None
    torch.set_num_threads(threads)
    return (f"machine busy ({load.describe()}): using {threads} of {current} threads so as not to fight that work "
            f"for cores ({THREADS_ENV}={current} forces {current})")
