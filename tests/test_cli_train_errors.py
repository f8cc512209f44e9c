"""Hostile input to ``pavenet train``: one line naming the problem and exit code 2, no traceback,
nothing executed, no run's checkpoints replaced; a signal is not a success."""
import os
import pickle
import signal
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from cli_helpers import CONFIG, SMALL, one_line
from pavenet.cli import main
from pavenet.data.synthetic import write_dataset
from pavenet.runtime.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, videos=1, frames=4, size=(64, 64), max_persons=1, seed=0, val_videos=0)
    return root


def _train(out: Path, data_root: Path, *extra: str, device: str = "cpu", flags: tuple = ()) -> list[str]:
    return ["train", CONFIG, "--no-val", "--device", device, "--out", str(out), *flags, "--set", *SMALL,
            f"data.root={data_root}", "train.max_steps=1", *extra]


@pytest.mark.parametrize("device", ["foo", "cuda:99"])
def test_a_bad_or_missing_device_is_one_line(device, data_root, tmp_path, capsys):
    assert main(_train(tmp_path / "run", data_root, device=device)) == 2
    line = one_line(capsys, "train")
    missing = "CUDA is not available" if not torch.cuda.is_available() else "CUDA device(s)"
    assert line.startswith(f"pavenet train: error: --device {device}: ")
    assert ("not a device" if device == "foo" else missing) in line


@pytest.mark.parametrize("setting, problem", [
    ("data.batch_size=0", "'data.batch_size' must be >= 1, got 0"),
    ("train.accumulate=0", "'train.accumulate' must be >= 1, got 0"),
    ("model.hidden_dim=7", "'model.hidden_dim' (7) must be even and divisible by model.num_heads (2)"),
    ("train.lr=nan", "'train.lr' must be a finite number, got nan"),
    ("postprocess.score_threshold=5", "'postprocess.score_threshold' must be in [0, 1], got 5.0"),
])
def test_out_of_range_config_values_are_one_line(setting, problem, data_root, tmp_path, capsys):
    assert main(_train(tmp_path / "run", data_root, setting)) == 2
    assert one_line(capsys, "train") == f"pavenet train: error: {CONFIG} with --set: {problem}"
    assert not (tmp_path / "run").exists()


def _run_with_state(run: Path, state_file: str, content: bytes) -> Path:
    folder = save_checkpoint(run, 1, {"w": torch.zeros(1)}, {"step": 1})
    (folder / state_file).write_bytes(content)
    return folder


def test_resuming_a_pickled_state_is_refused_without_the_flag_and_runs_nothing(data_root, tmp_path, capsys):
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    _run_with_state(tmp_path / "run", "train_state.pt", pickle.dumps({"step": Payload()}))
    assert main(_train(tmp_path / "run", data_root, flags=("--resume", str(tmp_path / "run")))) == 2
    line = one_line(capsys, "train")
    assert line.startswith(f"pavenet train: error: {tmp_path / 'run' / 'last' / 'train_state.pt'}: a training "
                           "state pickled by an older pavenet")
    assert "--allow-unsafe-pickle" in line and not marker.exists()


def test_resuming_a_corrupt_state_is_one_line(data_root, tmp_path, capsys):
    folder = _run_with_state(tmp_path / "run", "train_state.json", b'{"step": ')
    (folder / "train_state.safetensors").write_bytes(b"")
    state = tmp_path / "run" / "last" / "train_state.json"
    assert main(["train", CONFIG, "--no-val", "--device", "cpu", "--resume", str(tmp_path / "run"),
                 "--set", *SMALL, f"data.root={data_root}"]) == 2
    assert one_line(capsys, "train").startswith(
        f"pavenet train: error: {state}: unreadable training state (Expecting value")


def test_a_second_fresh_run_into_the_same_folder_is_refused(data_root, tmp_path, capsys):
    assert main(_train(tmp_path / "run", data_root)) == 0
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    capsys.readouterr()
    assert main(_train(tmp_path / "run", data_root)) == 2
    assert one_line(capsys, "train") == (
        f"pavenet train: error: {tmp_path / 'run'}: holds a run already; continue it with --resume "
        f"{tmp_path / 'run'}, train into another folder with --out, or start a new run there with --exist-ok "
        "(its checkpoints are kept)")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before == ["step_00000001"]


def test_a_full_disk_while_saving_is_one_line(data_root, tmp_path, capsys, monkeypatch):
    import pavenet.runtime.checkpoint as ckpt

    def no_space(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(ckpt, "save_file", no_space)
    assert main(_train(tmp_path / "run", data_root)) == 2
    line = one_line(capsys, "train")
    assert line.startswith(f"pavenet train: error: {tmp_path / 'run' / 'checkpoints' / 'step_00000001'}: "
                           "could not write the checkpoint (Error while serializing")
    assert line.endswith("No space left on device (os error 28)); the previous checkpoint is kept")
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []


@pytest.mark.slow
def test_sigterm_saves_and_exits_143_not_done(data_root, tmp_path, capsys, monkeypatch):
    import pavenet.engine.trainer as trainer_module

    original, calls = trainer_module.train_step, {"n": 0}

    def step_then_signal(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", step_then_signal)
    assert main(_train(tmp_path / "run", data_root, "train.max_steps=50")) == 128 + signal.SIGTERM
    out, err = capsys.readouterr()
    assert "done" not in out
    assert f"stopped by SIGTERM at step 2: checkpoint saved in {tmp_path / 'run'}" in err
    assert os.readlink(tmp_path / "run" / "last") == "checkpoints/step_00000002"
