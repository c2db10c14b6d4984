"""Threads that fit the machine: the free-CPU rule on hand-made loads, and what fit_threads changes."""

from __future__ import annotations

import pytest
import torch

from prunekit.measure.threads import THREADS_ENV, fit_threads, free_cpus
from prunekit.measure.timing import MachineLoad


@pytest.mark.parametrize("cpus, busy, free", [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 2.0, 1),
                                              (2, 3.5, 1), (4, 1.2, 3), (16, 0.2, 16)])
def test_free_cpus_counts_a_cpu_more_than_half_used_by_others_as_taken(cpus, busy, free):
    assert free_cpus(MachineLoad(cpus, busy_cpus=busy)) == free


def test_free_cpus_falls_back_on_the_load_average():
    assert free_cpus(MachineLoad(2, busy_cpus=None, load1=1.0)) == 1
    assert free_cpus(MachineLoad(2)) == 2


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(2)


def test_one_busy_core_of_two_leaves_one_thread_and_says_so(two_threads):
    note = fit_threads(MachineLoad(2, busy_cpus=1.0, load1=1.0))
    assert torch.get_num_threads() == 1
    assert "using 1 of 2 threads" in note and f"{THREADS_ENV}=2" in note


def test_a_quiet_machine_keeps_every_thread(two_threads):
    assert fit_threads(MachineLoad(2, busy_cpus=0.1)) is None
    assert torch.get_num_threads() == 2


def test_the_users_thread_count_wins(two_threads, monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "2")
    assert fit_threads(MachineLoad(2, busy_cpus=2.0)) is None
    assert torch.get_num_threads() == 2


def test_never_raises_the_thread_count(two_threads):
    torch.set_num_threads(1)
    assert fit_threads(MachineLoad(16, busy_cpus=0.0)) is None
    assert torch.get_num_threads() == 1
