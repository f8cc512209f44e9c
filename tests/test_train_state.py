"""Checkpoints hold no pickle, refuse to unpickle without consent, keep other runs' checkpoints
and clean what killed writes left behind."""
import json
import math
import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from pavenet.runtime import checkpoint as ckpt
from pavenet.engine.trainer import rng_state, set_rng_state
from pavenet.runtime.files import temp_path


def _trainer_like_state(seed: int = 0) -> dict:
    """A training state with what the Trainer stores: AdamW (int-keyed state, tuple betas), a
    LambdaLR, the RNG states of Python / numpy / torch, -inf, None."""
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    for _ in range(2):
        model(torch.randn(4, 3)).square().sum().backward()
        opt.step()
        sched.step()
    return {"step": 2, "best": -math.inf, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "ema": None, "rng": rng_state(), "world_size": 1}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_training_state_is_stored_without_pickle_and_round_trips(tmp_path):
    state = _trainer_like_state()
    folder = ckpt.save_checkpoint(tmp_path, 2, nn.Linear(3, 2).state_dict(), {"step": 2}, state)
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "train_state.json",
                                                        "train_state.safetensors"]
    json.loads((folder / "train_state.json").read_text())  # plain JSON, tensors in safetensors
    back = ckpt.load_train_state(tmp_path)
    assert back["step"] == 2 and back["best"] == -math.inf and back["ema"] is None
    want, got = state["optimizer"], back["optimizer"]
    assert set(got["state"]) == {0, 1} and got["param_groups"][0]["betas"] == (0.9, 0.999)
    for k in (0, 1):
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(got["state"][k][name], want["state"][k][name])
    assert back["scheduler"] == state["scheduler"]
    set_rng_state(back["rng"])
    drawn = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state["rng"])
    assert drawn == (random.random(), np.random.rand(), torch.rand(1).item())


def test_a_pickled_state_is_refused_unless_allowed_and_runs_nothing(tmp_path):
    folder = ckpt.save_checkpoint(tmp_path, 1, nn.Linear(3, 2).state_dict(), {"step": 1})
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(folder / "train_state.pt", "wb") as f:
        pickle.dump({"step": Payload()}, f)
    with pytest.raises(ckpt.CheckpointError, match=r"train_state\.pt: a training state pickled by an older "
                                                   r"pavenet; .* only with --allow-unsafe-pickle"):
        ckpt.load_train_state(tmp_path)
    assert not marker.exists()
    torch.save({"step": 7, "best": 0.5}, folder / "train_state.pt")
    assert ckpt.load_train_state(tmp_path, allow_pickle=True) == {"step": 7, "best": 0.5}


@pytest.mark.parametrize("damage, named", [
    ("json", "train_state.json: unreadable training state"),
    ("tensor_key", "train_state.json: malformed training state"),
    ("safetensors", "train_state.safetensors: unreadable training state"),
    ("legacy", "train_state.pt: unreadable training state"),
])
def test_a_corrupt_training_state_names_the_file(tmp_path, damage, named):
    folder = ckpt.save_checkpoint(tmp_path, 1, nn.Linear(3, 2).state_dict(), {"step": 1}, _trainer_like_state())
    if damage == "json":
        (folder / "train_state.json").write_text('{"step": 1, "optimizer": {')
    elif damage == "tensor_key":
        (folder / "train_state.json").write_text('{"step": {"$tensor": "t999"}}')
    elif damage == "safetensors":
        data = (folder / "train_state.safetensors").read_bytes()
        (folder / "train_state.safetensors").write_bytes(data[:100])
    else:
        for name in ("train_state.json", "train_state.safetensors"):
            (folder / name).unlink()
        (folder / "train_state.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ckpt.CheckpointError, match=named):
        ckpt.load_train_state(tmp_path, allow_pickle=True)


def test_invalid_json_in_the_metadata_names_the_file_and_key(tmp_path):
    folder = ckpt.save_checkpoint(tmp_path, 1, nn.Linear(3, 2).state_dict(), {"step": 1, "config": {"a": 1}})
    weights = folder / "model.safetensors"
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata()
    save_file(load_file(str(weights)), str(weights), metadata={**meta, "config": '{"a": '})
    with pytest.raises(ckpt.CheckpointError, match=r"model\.safetensors: metadata 'config' is not valid JSON"):
        ckpt.read_metadata(tmp_path)


def test_a_run_never_prunes_another_runs_checkpoints(tmp_path):
    weights = nn.Linear(3, 2).state_dict()
    ckpt.save_checkpoint(tmp_path, 1, weights, {"step": 1, "run_id": "first"}, tags=("last", "best"))
    ckpt.save_checkpoint(tmp_path, 2, weights, {"step": 2, "run_id": "first"})
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, weights, {"step": step, "run_id": "second"})
    root = tmp_path / "checkpoints"
    owners = {p.name: ckpt.read_metadata(p)["run_id"] for p in root.iterdir()}
    # the first run keeps both of its checkpoints (its last is no longer linked); the second run
    # wrote its steps 1 and 2 beside the first run's folders of the same name and pruned them
    assert owners == {"step_00000001": "first", "step_00000002": "first", "step_00000003": "second"}
    assert os.readlink(tmp_path / "last") == "checkpoints/step_00000003"
    assert os.readlink(tmp_path / "best") == "checkpoints/step_00000001"


def test_a_save_removes_what_killed_saves_left_and_keeps_live_ones(tmp_path):
    root = tmp_path / "checkpoints"
    root.mkdir()
    dead = _dead_pid()
    stale_dir = root / temp_path(root / "step_00000005").name.replace(f"-{os.getpid()}-", f"-{dead}-")
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"half")
    stale_link = tmp_path / temp_path(tmp_path / "last").name.replace(f"-{os.getpid()}-", f"-{dead}-")
    stale_link.write_text("")
    legacy = [root / f".tmp_step_00000004_{dead}", tmp_path / f".best.tmp{dead}"]  # earlier versions' names
    legacy[0].mkdir()
    legacy[1].write_text("")
    live = tmp_path / temp_path(tmp_path / "metrics.jsonl").name  # this process: a write in progress
    live.write_text("")
    ckpt.save_checkpoint(tmp_path, 1, nn.Linear(3, 2).state_dict(), {"step": 1})
    assert not stale_dir.exists() and not stale_link.exists() and live.exists()
    assert not any(p.exists() for p in legacy)
    assert sorted(p.name for p in root.iterdir()) == ["step_00000001"]


def test_non_finite_weights_are_listed():
    state = {"a": torch.zeros(2), "b": torch.tensor([1.0, float("nan")]), "c": torch.tensor([2]),
             "d": torch.tensor([float("inf")])}
    assert ckpt.non_finite(state) == ["b", "d"]
