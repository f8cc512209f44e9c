"""Training in several local processes (``--processes``): the group each process joins, errors
raised in a process, the main rank's validation threads, ``pavenet train --processes``."""
import os
import signal

import pytest
import torch

from pavenet.errors import PavenetError
from pavenet.runtime.launch import ProcessFailed, run_local, with_threads


def _report_group(scale: int) -> tuple:
    from pavenet.runtime.distributed import cleanup, init_distributed

    dist = init_distributed("cpu")
    value = torch.tensor([float(dist.rank + 1) * scale])
    torch.distributed.all_reduce(value)
    result = (dist.rank, dist.world_size, os.environ["LOCAL_RANK"], os.environ["LOCAL_WORLD_SIZE"],
              torch.get_num_threads(), float(value))
    cleanup()
    return result


def test_processes_form_one_group_and_return_their_results_by_rank():
    results = run_local(_report_group, (10,), 2, threads=1)
    # all-reduce of 10 * (rank + 1) over ranks 0 and 1: 10 + 20
    assert results == [(0, 2, "0", "2", 1, 30.0), (1, 2, "1", "2", 1, 30.0)]


def _fail_on_rank_one() -> int:
    from pavenet.runtime.distributed import barrier, init_distributed

    dist = init_distributed("cpu")
    if dist.rank == 1:
        raise PavenetError("clip 7: frame_0003.jpg is not an image")
    barrier()  # rank 0 waits for a rank that is gone: it must be stopped, not left hanging
    return 0


@pytest.mark.timeout(120)
def test_an_error_in_one_process_is_raised_with_its_message():
    with pytest.raises(ProcessFailed, match=r"clip 7: frame_0003\.jpg is not an image"):
        run_local(_fail_on_rank_one, (), 2)


def test_the_main_rank_validates_with_the_threads_of_the_waiting_ranks(monkeypatch):
    before = torch.get_num_threads()
    seen = []

    def validate(step):
        seen.append((step, torch.get_num_threads()))
        return {"map": float(step)}

    try:
        torch.set_num_threads(1)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
        assert with_threads(validate)(5) == {"map": 5.0}
        assert torch.get_num_threads() == 1
        assert with_threads(validate, 2)(6) == {"map": 6.0}
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert seen == [(5, 3), (6, 2)]
    assert with_threads(None) is None


def test_train_command_runs_its_processes_as_one_group(tmp_path):
    from pavenet.cli import main
    from pavenet.data.synthetic import write_dataset
    from pavenet.runtime.checkpoint import load_train_state, load_weights

    write_dataset(tmp_path / "data", videos=2, frames=6, size=(64, 64), max_persons=2, seed=3, val_videos=1)
    small = ["model.hidden_dim=32", "model.num_heads=2", "model.enc_layers=1", "model.ffn_dim=64",
             "model.num_queries=8", "model.num_kept=4", "model.pose_dec_layers=1", "model.refine_hidden=[32]",
             "model.embed_dim=16", "model.backbone.name=resnet10t", "data.train_short_side=[64,64]",
             "data.train_max_size=64", "data.num_workers=0", "train.max_steps=2", f"data.root={tmp_path / 'data'}"]
    run = tmp_path / "run"
    assert main(["train", "synthetic_tiny", "--out", str(run), "--no-val", "--processes", "2", "--threads", "2",
                 "--batch-size", "1", "--set", *small]) == 0
    assert load_weights(run)[1]["step"] == 2
    assert load_train_state(run)["world_size"] == 2


def _killed_on_rank_one() -> int:
    from pavenet.runtime.distributed import barrier, init_distributed

    dist = init_distributed("cpu")
    if dist.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
    barrier()
    return 0


@pytest.mark.timeout(120)
def test_a_killed_process_is_named():
    with pytest.raises(ProcessFailed, match=r"training process 1 of 2 stopped: process 1 terminated with signal SIGKILL"):
        run_local(_killed_on_rank_one, (), 2)


def test_processes_are_refused_under_torchrun(monkeypatch, capsys):
    from pavenet.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "synthetic_tiny", "--processes", "2", "--threads", "1", "--set", "data.root=unused"]) == 2
    assert "pavenet train: error: --processes starts its own process group: use it instead of torchrun" \
        in capsys.readouterr().err
