"""Pose denoising queries: start poses, noise, layout, attention mask, model isolation, losses."""
from __future__ import annotations

import math

import pytest
import torch
from target_factory import random_target
from test_criterion import make_criterion, small_case

from pavenet.config import load_config
from pavenet.engine.step import train_step
from pavenet.model import build
from pavenet.model.denoising import attention_mask, filled_poses, make_denoising_queries, noised
from pavenet.model import build_model

SMALL = ["model.hidden_dim=32", "model.num_heads=2", "model.enc_layers=1", "model.ffn_dim=64",
         "model.num_queries=8", "model.num_kept=4", "model.pose_dec_layers=2", "model.joint_dec_layers=2",
         "model.refine_hidden=[32]", "model.embed_dim=16", "model.backbone.name=resnet10t"]


def test_filled_poses_hand_computed() -> None:
    keypoints = torch.zeros(2, 3, 3, 2)
    keypoints[0, 0] = torch.tensor([[0.2, 0.2], [0.4, 0.6], [0.9, 0.9]])
    keypoints[0, 2] = torch.tensor([[0.5, 0.5], [0.6, 0.5], [0.7, 0.5]])
    visible = torch.zeros(2, 3, 3, dtype=torch.bool)
    visible[0, 0, :2] = True  # joint 2 of frame 0 unannotated: the mean of joints 0 and 1
    visible[0, 2] = True  # frame 1 has nothing: frames 0 and 2 are as near, the lower one wins
    poses, usable = filled_poses(keypoints, visible)
    frame0 = torch.tensor([[0.2, 0.2], [0.4, 0.6], [0.3, 0.4]])
    torch.testing.assert_close(poses[0, 0], frame0)
    torch.testing.assert_close(poses[0, 1], frame0)
    torch.testing.assert_close(poses[0, 2], keypoints[0, 2])
    assert usable.tolist() == [True, False]


def test_noise_stays_within_twice_the_scale_of_the_half_box_and_reaches_past_it() -> None:
    pose = torch.tensor([[0.3, 0.2], [0.5, 0.6], [0.4, 0.4]]).expand(4000, -1, -1)
    half = torch.tensor([0.1, 0.2])
    out = noised(pose, 0.5, torch.Generator().manual_seed(0))
    offset = (out - pose) / half
    assert offset.abs().max() <= 1.0 + 1e-5 and offset.abs().max() > 0.95
    shared = offset.mean(-2)  # the whole-pose shift dominates the mean over joints
    assert shared.std() > offset.sub(shared[:, None]).std() * 0.9
    torch.testing.assert_close(noised(pose[:2], 0.0), pose[:2])
    edge = noised(torch.tensor([[0.0, 0.0], [1.0, 1.0]]).expand(200, -1, -1), 1.0, torch.Generator().manual_seed(1))
    assert edge.min() >= 0.0 and edge.max() <= 1.0


def test_queries_are_group_major_skip_unusable_tracks_and_pad_empty_clips() -> None:
    gen = torch.Generator().manual_seed(0)
    target = random_target(3, 3, 4, gen)
    target["visible"][1] = False  # track 1 has no annotated joint
    empty = random_target(0, 3, 4, gen)
    dn = make_denoising_queries([target, empty], groups=3, noise=0.0, device=torch.device("cpu"))
    assert dn.groups == 3 and dn.reference.shape == (2, 6, 3, 4, 2)
    assert dn.track.tolist() == [[0, 2, 0, 2, 0, 2], [-1] * 6]
    assert dn.valid.tolist() == [[True] * 6, [False] * 6]
    visible = target["visible"] & target["present"][..., None]
    poses, _ = filled_poses(target["keypoints"], visible)
    for slot, track in enumerate([0, 2, 0, 2, 0, 2]):
        torch.testing.assert_close(dn.reference[0, slot], poses[track])


def test_attention_mask_hand_written() -> None:
    x, o = True, False
    expected = torch.tensor([
        [o, o, x, x, x, x],  # matching queries see only matching queries
        [o, o, x, x, x, x],
        [o, o, o, o, x, x],  # group 0 sees the matching queries and itself
        [o, o, o, o, x, x],
        [o, o, x, x, o, o],  # group 1
        [o, o, x, x, o, o],
    ])
    assert torch.equal(attention_mask(2, 2, 2, torch.device("cpu")), expected)


@pytest.fixture(scope="module")
def dn_model():
    torch.manual_seed(0)
    model, criterion, _ = build(load_config("configs/synthetic_tiny.yaml", [*SMALL, "model.dn_groups=2"]))
    with torch.no_grad():  # break the symmetric initialisation so that queries differ
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(3)
    targets = [random_target(2, 3, 15, gen), random_target(1, 3, 15, gen)]
    frames, mask = torch.randn(2, 3, 3, 64, 64, generator=gen), torch.zeros(2, 64, 64, dtype=torch.bool)
    return model.train(), criterion, targets, frames, mask


def test_denoising_queries_leave_the_matching_outputs_unchanged(dn_model) -> None:
    model, _, targets, frames, mask = dn_model
    torch.manual_seed(1)
    with_dn = model(frames, mask, targets)
    without = model(frames, mask)
    assert "dn_outputs" not in without
    for key in ("logits", "keypoints", "visibility", "sigma", "embedding"):
        torch.testing.assert_close(with_dn[key], without[key], atol=1e-5, rtol=0)
    assert torch.equal(with_dn["kept_index"], without["kept_index"])
    for a, b in zip(with_dn["aux_outputs"], without["aux_outputs"]):
        torch.testing.assert_close(a["keypoints"], b["keypoints"], atol=1e-5, rtol=0)
    # two pose-decoder and two joint-decoder layers, N = 2 groups x 2 tracks (clip 1 padded)
    assert len(with_dn["dn_outputs"]) == 4 and with_dn["dn_track"].tolist() == [[0, 1, 0, 1], [0, -1, 0, -1]]
    assert with_dn["dn_outputs"][0]["logits"].shape == (2, 4)
    assert with_dn["dn_outputs"][-1]["keypoints"].shape == (2, 4, 3, 15, 2)
    assert "logits" not in with_dn["dn_outputs"][-1]
    model.eval()
    with torch.no_grad():
        assert "dn_outputs" not in model(frames, mask, targets)
    model.train()


def test_denoising_groups_do_not_see_each_other(dn_model) -> None:
    model, _, targets, frames, mask = dn_model
    memory = model.encode(frames.flatten(0, 1), mask[:, None].expand(-1, 3, -1, -1).flatten(0, 1))
    torch.manual_seed(2)
    dn = make_denoising_queries(targets, 2, 0.4, frames.device)
    moved = dn._replace(reference=dn.reference.clone())
    moved.reference[:, 2:] = (moved.reference[:, 2:] + 0.1).clamp(0, 1)  # group 1 only
    a, b = model.decode(memory, 2, dn)["dn_outputs"], model.decode(memory, 2, moved)["dn_outputs"]
    for out_a, out_b in zip(a, b):
        torch.testing.assert_close(out_a["keypoints"][:, :2], out_b["keypoints"][:, :2], atol=1e-5, rtol=0)
        assert not torch.allclose(out_a["keypoints"][:, 2:], out_b["keypoints"][:, 2:])


def test_denoising_losses_hand_computed() -> None:
    outputs, targets = small_case()
    # denoising query 0 reconstructs track 0 with the values of the matched query of small_case,
    # query 1 is padding: its (large) errors must not count
    dn = {k: v.flip(1) for k, v in outputs.items()}
    dn["keypoints"] = dn["keypoints"].clone()
    dn["keypoints"][0, 1] = 0.0
    outputs = dict(outputs, dn_outputs=[dn], dn_track=torch.tensor([[0, -1]]), dn_valid=torch.tensor([[True, False]]))
    losses = make_criterion({"loss_class": 1.0, "loss_kpt": 1.0, "loss_vis": 1.0})(outputs, targets)
    assert float(losses["loss_kpt_dn0"]) == pytest.approx(0.1, rel=1e-5)
    assert float(losses["loss_class_dn0"]) == pytest.approx(0.25 * 0.25**2 * math.log(4.0 / 3.0), rel=1e-5)
    bce = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(-2.0))) / 2
    assert float(losses["loss_vis_dn0"]) == pytest.approx(bce, rel=1e-5)
    assert float(losses["loss"]) == pytest.approx(sum(float(v) for k, v in losses.items() if k != "loss"), rel=1e-6)


def test_tracks_not_supervised_in_keyframe_mode_get_no_denoising_loss() -> None:
    outputs, targets = small_case()
    targets[0]["present"] = torch.tensor([[False, True]])  # absent from the key frame 0
    outputs = dict(outputs, dn_outputs=[outputs], dn_track=torch.tensor([[0, 0]]), dn_valid=torch.ones(1, 2, dtype=torch.bool))
    losses = make_criterion({"loss_class": 1.0, "loss_kpt": 1.0}, mode="keyframe")(outputs, targets)
    assert float(losses["loss_kpt_dn0"]) == 0.0 and float(losses["loss_class_dn0"]) == 0.0


def test_a_training_step_passes_the_targets_and_trains_the_denoising_embeddings(dn_model) -> None:
    model, criterion, targets, frames, mask = dn_model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    batch = {"frames": frames, "mask": mask, "targets": targets}
    result = train_step(model, criterion, optimizer, [batch], 1.0, False, torch.device("cpu"), denoise=True)
    assert {"loss_kpt_dn0", "loss_class_dn0", "loss_kpt_dn3"} <= set(result.losses)
    assert model.dn_tgt.grad.abs().sum() > 0 and model.dn_pos.grad.abs().sum() > 0


def test_bad_denoising_settings_are_errors() -> None:
    with pytest.raises(ValueError, match="dn_groups"):
        build_model(load_config("configs/vepe_tiny.yaml", ["model.dn_groups=2"]).model)
    with pytest.raises(ValueError, match="dn_noise"):
        build_model(load_config("configs/synthetic_tiny.yaml", ["model.dn_noise=-0.1"]).model)


def test_checkpoints_load_with_or_without_the_training_only_parameters(tmp_path) -> None:
    from pavenet.runtime.checkpoint import CheckpointError, save_checkpoint
    from pavenet.runtime.weights import load_model_weights

    torch.manual_seed(0)
    plain = build_model(load_config("configs/synthetic_tiny.yaml", SMALL).model)
    torch.manual_seed(1)
    dn = build_model(load_config("configs/synthetic_tiny.yaml", [*SMALL, "model.dn_groups=2"]).model)
    own_dn = dn.dn_tgt.detach().clone()
    load_model_weights(dn, str(save_checkpoint(tmp_path / "plain", 0, plain.state_dict(), {})))
    torch.testing.assert_close(dn.query_init.cls.weight, plain.query_init.cls.weight)
    assert torch.equal(dn.dn_tgt, own_dn)  # kept its initialisation
    with torch.no_grad():
        dn.query_init.cls.weight.add_(1.0)
    load_model_weights(plain, str(save_checkpoint(tmp_path / "dn", 0, dn.state_dict(), {})))
    torch.testing.assert_close(plain.query_init.cls.weight, dn.query_init.cls.weight)
    state = dn.state_dict()
    del state["query_init.cls.bias"]  # other keys stay required
    with pytest.raises(CheckpointError, match="missing in checkpoint  query_init.cls.bias"):
        load_model_weights(plain, str(save_checkpoint(tmp_path / "broken", 0, state, {})))
