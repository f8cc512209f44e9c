"""Thread planning (pavenet.runtime.threads): usable cores, busy cores, the choice, passive waiting."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from pavenet.runtime import threads


def test_cgroup_quota(tmp_path) -> None:
    path = tmp_path / "cpu.max"
    path.write_text("150000 100000\n")
    assert threads.cgroup_quota(path) == 1.5
    path.write_text("max 100000\n")
    assert threads.cgroup_quota(path) is None
    assert threads.cgroup_quota(tmp_path / "missing") is None


def test_busy_cores_from_two_stat_samples(tmp_path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal
    stat.write_text("cpu 1 1 1 1 1 1 1 1\ncpu0 100 0 0 900 0 0 0 0\ncpu1 0 0 0 1000 0 0 0 0\n")
    assert threads._cpu_times({0, 1}, stat) == (100.0, 2000.0)
    assert threads._cpu_times({1}, stat) == (0.0, 1000.0)


def test_choice_from_usable_and_busy_cores(monkeypatch) -> None:
    monkeypatch.setattr(threads, "allowed_cpus", lambda: {0, 1})
    monkeypatch.setattr(threads, "cgroup_quota", lambda path=None: None)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert threads.choose_threads(busy=0.1) == 2
    assert threads.choose_threads(busy=1.0) == 1  # one core taken by another program
    assert threads.choose_threads(busy=2.0) == 1  # never fewer than one
    assert threads.choose_threads(requested=3, busy=2.0) == 3
    with pytest.raises(ValueError, match=">= 1"):
        threads.choose_threads(requested=0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun processes share the two cores
    assert threads.choose_threads(busy=0.0) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setattr(threads, "cgroup_quota", lambda path=None: 1.0)  # a one-CPU container
    assert threads.choose_threads(busy=0.0) == 1


def test_passive_waiting_only_under_load_and_never_over_the_users_choice(monkeypatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert not threads.prefer_passive_waiting(0.2)
    assert "OMP_WAIT_POLICY" not in threads.os.environ
    assert threads.prefer_passive_waiting(1.0)
    assert threads.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert not threads.prefer_passive_waiting(2.0)
    assert threads.os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


class _ThreadCount(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return torch.get_num_threads()


def test_data_loader_workers_run_one_thread_each() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        counts = [int(x) for x in DataLoader(_ThreadCount(), batch_size=1, num_workers=1)]
        assert counts == [1, 1]
    finally:
        torch.set_num_threads(before)


def test_cli_says_the_thread_count(capsys) -> None:
    import argparse

    from pavenet.cli import apply_threads

    before = torch.get_num_threads()
    try:
        assert apply_threads(argparse.Namespace(threads=1, busy_cores=0.0)) == 1
        assert torch.get_num_threads() == 1
        assert capsys.readouterr().out.startswith("threads: 1 (--threads; OpenMP wait policy")
        count = apply_threads(argparse.Namespace(threads=None, busy_cores=0.0))
        assert count == threads.usable_cores()
        assert f"threads: {count} (0.0 cores busy elsewhere" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)


def test_estimator_sets_the_threads_it_is_given() -> None:
    from pavenet.config import load_config
    from pavenet.infer.estimator import PoseEstimator
    from pavenet.model import build_model

    cfg = load_config("configs/synthetic_tiny.yaml")
    before = torch.get_num_threads()
    try:
        PoseEstimator.from_config(build_model(cfg.model), cfg, device="cpu", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
