"""Engine pieces that do not need the network: checkpoints, weight fitting, schedule, sampler."""
import pytest
import torch
from torch import nn

from pavenet.config import TrainConfig
from pavenet.runtime import checkpoint as ckpt
from pavenet.engine.optim import build_optimizer, lr_factor, param_groups
from pavenet.engine.sampler import ResumableSampler, SeededDataset
from pavenet.runtime.weights import adapt_frames, fit_state_dict


class Toy(nn.Module):
    def __init__(self, t: int = 3):
        super().__init__()
        self.num_frames = t
        self.backbone = nn.Linear(4, 4)
        self.sampling_offsets = nn.Linear(4, 2)
        self.head = nn.Linear(4, 2 * t)  # per-frame slices stacked on the output axis


def test_checkpoint_roundtrip_links_and_pruning(tmp_path):
    m = Toy()
    for step in (1, 2, 3):
        with torch.no_grad():
            m.head.weight.fill_(step)
        tags = ("last", "best") if step == 2 else ("last",)
        ckpt.save_checkpoint(tmp_path, step, m.state_dict(), {"step": step}, {"step": step}, tags)
    state, meta = ckpt.load_weights(tmp_path)  # run dir -> last
    assert meta["step"] == 3 and float(state["head.weight"][0, 0]) == 3.0
    best, meta_best = ckpt.load_weights(tmp_path / "best")
    assert meta_best["step"] == 2 and float(best["head.weight"][0, 0]) == 2.0
    assert ckpt.load_train_state(tmp_path / "last")["step"] == 3
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step_00000002", "step_00000003"]


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    m = Toy()
    ckpt.save_checkpoint(tmp_path, 1, m.state_dict(), {"step": 1}, {"step": 1})

    def broken_save(folder, state):
        (folder / "train_state.json").write_text("partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.ts, "save_train_state", broken_save)
    with pytest.raises(ckpt.CheckpointError, match=r"step_00000002: could not write the checkpoint "
                                                   r"\(\[Errno 28\] No space left on device\); the previous"):
        ckpt.save_checkpoint(tmp_path, 2, m.state_dict(), {"step": 2}, {"step": 2})
    monkeypatch.undo()
    state, meta = ckpt.load_weights(tmp_path)
    assert meta["step"] == 1 and ckpt.load_train_state(tmp_path)["step"] == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000001"]


def test_corrupt_or_missing_checkpoint_names_file(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        ckpt.load_weights(tmp_path / "nothing")
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors"):
        ckpt.load_weights(bad)


def test_fit_state_dict_reports_every_mismatch():
    a, b = Toy(3), Toy(3)
    b.backbone = nn.Linear(4, 5)
    state = a.state_dict()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ckpt.CheckpointError) as err:
        fit_state_dict(b, state, 3, 3)
    msg = str(err.value)
    assert "backbone.weight" in msg and "backbone.bias" in msg and "extra.weight" in msg


def test_fit_state_dict_non_strict_skips_one_sided_keys_but_not_shape_mismatches():
    a, b = Toy(3), Toy(3)
    state = a.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["head.bias"]
    with pytest.warns(UserWarning, match="1 model keys keep their initial values, 1 checkpoint keys unused"):
        fitted = fit_state_dict(b, state, 3, 3, strict=False)
    assert set(fitted) == set(b.state_dict()) - {"head.bias"}
    assert torch.equal(fitted["head.weight"], a.head.weight)
    state["head.weight"] = torch.zeros(1, 1)
    with pytest.raises(ckpt.CheckpointError, match="shape mismatch  head.weight"):
        fit_state_dict(b, state, 3, 3, strict=False)


def test_fit_state_dict_across_clip_lengths_copies_key_frame():
    src = Toy(1)
    with torch.no_grad():
        src.head.weight.copy_(torch.arange(8.0).reshape(2, 4))
    dst = Toy(3)
    fitted = fit_state_dict(dst, src.state_dict(), 1, 3)
    w = fitted["head.weight"]
    assert w.shape == (6, 4)
    for t in range(3):
        assert torch.equal(w[2 * t: 2 * t + 2], src.head.weight)
    v = torch.arange(12.0).reshape(3, 4)  # 3 frame slices of 4 values, flattened on axis 1 below
    out = adapt_frames(v.reshape(1, 12), 1, 3, 5)
    assert torch.equal(out.reshape(5, 4), v[1].expand(5, 4))


def test_param_groups_and_lr_factor():
    cfg = TrainConfig(lr=1e-3, lr_backbone_mult=0.1, lr_offsets_mult=0.5)
    groups = {g["name"]: g for g in param_groups(Toy(), cfg)}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4)
    assert groups["slow"]["lr"] == pytest.approx(5e-4)
    assert groups["rest"]["lr"] == pytest.approx(1e-3)
    assert len(build_optimizer(Toy(), cfg).param_groups) == 3
    step_cfg = TrainConfig(schedule="step", lr_drop_epochs=[2, 3], warmup_steps=2)
    assert [lr_factor(s, 100, 10, step_cfg) for s in (0, 1, 5, 20, 35)] == [0.5, 1.0, 1.0, 0.1, pytest.approx(0.01)]
    cos = TrainConfig(schedule="cosine", warmup_steps=0)
    assert lr_factor(0, 10, 5, cos) == 1.0 and lr_factor(5, 10, 5, cos) == pytest.approx(0.5)
    assert lr_factor(10, 10, 5, cos) == pytest.approx(0.0, abs=1e-12)


def test_sampler_resume_and_ranks_partition():
    full = list(ResumableSampler(10, True, 7))
    assert sorted(full) == list(range(10))
    s = ResumableSampler(10, True, 7)
    s.set_start(4)
    assert list(s) == full[4:] and len(s) == 6
    r0, r1 = ResumableSampler(10, True, 7, 0, 2), ResumableSampler(10, True, 7, 1, 2)
    assert sorted(list(r0) + list(r1)) == list(range(10))
    e1 = ResumableSampler(10, True, 7)
    e1.set_epoch(1)
    assert list(e1) != full


def test_seeded_dataset_is_deterministic_and_keeps_main_rng():
    class Rand(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(2)

    ds = SeededDataset(Rand(), seed=3)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = ds[1]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, ds[1]) and not torch.equal(a, ds[2])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[1])


def test_image_model_weights_initialise_the_video_model(tmp_path):
    from pathlib import Path

    from pavenet.config import config_to_dict, load_config
    from pavenet.runtime.weights import load_model_weights
    from pavenet.model import build

    configs = Path(__file__).resolve().parents[1] / "configs"
    small = ["model.hidden_dim=32", "model.num_heads=2", "model.enc_layers=1", "model.ffn_dim=64",
             "model.num_queries=8", "model.num_kept=4", "model.refine_hidden=[32]", "model.embed_dim=16"]
    torch.manual_seed(0)
    c1 = load_config(configs / "synthetic_tiny_t1.yaml", small)
    image_model = build(c1)[0].eval()
    ckpt.save_checkpoint(tmp_path, 0, image_model.state_dict(), {"config": config_to_dict(c1), "step": 0})
    video_model = build(load_config(configs / "synthetic_tiny.yaml", small))[0].eval()
    load_model_weights(video_model, str(tmp_path))
    x = torch.randn(1, 1, 3, 64, 64)
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    with torch.no_grad():
        single = image_model(x, mask)["keypoints"][:, :, 0]
        clip = video_model(x.expand(1, 3, 3, 64, 64).contiguous(), mask)["keypoints"]
    # a clip of one repeated frame: every frame of the video model predicts what the image model does
    for t in range(3):
        torch.testing.assert_close(clip[:, :, t], single, atol=1e-5, rtol=0)
