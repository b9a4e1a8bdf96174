"""clinfuse.datasets.parallel: chunks in worker processes, results in task order, safe in daemons."""

from __future__ import annotations

import multiprocessing

import pytest

from clinfuse.datasets.parallel import n_workers, run_chunks


def test_results_in_task_order_with_workers(monkeypatch):
    monkeypatch.setenv("CLINFUSE_WORKERS", "2")
    tasks = list(range(-60, 0))
    assert run_chunks(abs, tasks, [1] * len(tasks), "t", show_progress=False) == [abs(t) for t in tasks]


def test_inside_a_daemonic_pool_worker_it_runs_in_process(monkeypatch):
    # a multiprocessing.Pool worker may not start children: run_chunks must not try
    monkeypatch.setenv("CLINFUSE_WORKERS", "2")
    tasks = list(range(-60, 0))
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply(run_chunks, (abs, tasks, [1] * len(tasks), "t", False))
    assert got == [abs(t) for t in tasks]


def test_worker_count_from_the_environment(monkeypatch):
    monkeypatch.delenv("CLINFUSE_WORKERS", raising=False)
    monkeypatch.setenv("CLINFUSE_SYNTH_WORKERS", "3")  # the older name still counts
    assert n_workers() == 3
    monkeypatch.setenv("CLINFUSE_WORKERS", "1")
    assert n_workers() == 1
    monkeypatch.setenv("CLINFUSE_WORKERS", "zero")
    with pytest.raises(ValueError, match="CLINFUSE_WORKERS must be a positive integer"):
        n_workers()


def test_one_worker_by_default_where_processes_spawn(monkeypatch):
    import multiprocessing as mp

    monkeypatch.delenv("CLINFUSE_WORKERS", raising=False)
    monkeypatch.delenv("CLINFUSE_SYNTH_WORKERS", raising=False)
    monkeypatch.setattr(mp, "get_start_method", lambda allow_none=False: "spawn")
    assert n_workers() == 1
    monkeypatch.setenv("CLINFUSE_WORKERS", "2")  # asked for: the caller takes care of the main guard
    assert n_workers() == 2
