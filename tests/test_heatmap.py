"""Auxiliary heatmap head and loss: targets, loss and layout against float64 brute force."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from target_factory import random_outputs, random_target

from pavenet.config import load_config
from pavenet.model import build
from pavenet.model.criterion import SetCriterion
from pavenet.model.encoder import FrameMemory
from pavenet.model.heatmap import HeatmapHead, centernet_focal_loss, heatmap_targets
from pavenet.model.matcher import HungarianMatcher
from pavenet.model import build_model


def brute_targets(keypoints, joints, ratios, shape, sigma):
    """Loop over people, frames, joints and cells in float64."""
    h, w = shape
    g, t, j = joints.shape
    out = torch.zeros(t, j, h, w, dtype=torch.float64)
    for p in range(g):
        for f in range(t):
            for k in range(j):
                if not joints[p, f, k]:
                    continue
                cx = math.floor(float(keypoints[p, f, k, 0]) * float(ratios[f, 0]) * w)
                cy = math.floor(float(keypoints[p, f, k, 1]) * float(ratios[f, 1]) * h)
                if not (0 <= cx < w and 0 <= cy < h):
                    continue
                for y in range(h):
                    for x in range(w):
                        v = math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma ** 2))
                        out[f, k, y, x] = max(out[f, k, y, x], v)
    return out


def brute_focal(logits, target, weight):
    total = 0.0
    for z, y, m in zip(logits.double().flatten().tolist(), target.double().flatten().tolist(),
                       weight.double().flatten().tolist()):
        p = 1.0 / (1.0 + math.exp(-z))
        if y == 1.0:
            total += m * -math.log(p) * (1 - p) ** 2
        else:
            total += m * -math.log(1 - p) * p ** 2 * (1 - y) ** 4
    return total


def test_targets_hand_computed() -> None:
    keypoints = torch.tensor([[[[0.5, 0.25], [0.9, 0.9]]]])  # 1 person, 1 frame, 2 joints
    joints = torch.tensor([[[True, False]]])
    out = heatmap_targets(keypoints, joints, torch.ones(1, 2), (4, 8), sigma=1.0)
    assert out.shape == (1, 2, 4, 8)
    assert out[0, 0, 1, 4] == 1.0  # floor(0.5 * 8), floor(0.25 * 4)
    assert out[0, 0, 1, 5].item() == pytest.approx(math.exp(-0.5))
    assert out[0, 0, 3, 6].item() == pytest.approx(math.exp(-4.0))
    assert out[0, 1].abs().sum() == 0  # not annotated: no target
    half = heatmap_targets(keypoints, joints, torch.tensor([[0.5, 1.0]]), (4, 8), sigma=1.0)
    assert half[0, 0, 1, 2] == 1.0  # the unpadded region is half the map wide


def test_targets_match_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    keypoints = torch.rand(3, 2, 4, 2, generator=gen) * 1.2 - 0.1  # some outside the image
    joints = torch.rand(3, 2, 4, generator=gen) < 0.7
    ratios = torch.tensor([[1.0, 0.75], [0.6, 1.0]])
    got = heatmap_targets(keypoints.double(), joints, ratios.double(), (5, 7), sigma=1.5)
    torch.testing.assert_close(got, brute_targets(keypoints, joints, ratios, (5, 7), 1.5))
    assert got.amax() == 1.0
    empty = heatmap_targets(keypoints[:0], joints[:0], ratios, (5, 7), 1.0)
    assert empty.shape == (2, 4, 5, 7) and empty.abs().sum() == 0


def test_focal_loss_matches_brute_force_and_respects_weights() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, generator=gen) * 3
    target = torch.rand(2, 3, 4, generator=gen)
    target[0, 1, 2] = target[1, 0, 0] = 1.0
    weight = (torch.rand(2, 3, 4, generator=gen) < 0.7).float()
    got = centernet_focal_loss(logits, target, weight)
    assert got.item() == pytest.approx(brute_focal(logits, target, weight), rel=1e-5)
    changed = logits.clone()
    changed[weight == 0] = 50.0  # masked cells do not count
    assert centernet_focal_loss(changed, target, weight).item() == pytest.approx(got.item(), rel=1e-6)


def test_head_reads_the_finest_level_in_clip_order() -> None:
    torch.manual_seed(0)
    head = HeatmapHead(8, 3)
    shapes = ((2, 3), (1, 2))
    memory = torch.randn(4, 6 + 2, 8)  # 2 clips x 2 frames
    ratios = torch.rand(4, 2, 2)
    padding = torch.zeros(4, 8, dtype=torch.bool)
    padding[3, [2, 5, 7]] = True  # frame 3: cells (0, 2) and (1, 2) of level 0, one level-1 token
    mem = FrameMemory(memory, torch.tensor(shapes), torch.tensor([0, 6]), ratios, padding, shapes)
    out = head(mem, batch=2)
    assert out["logits"].shape == (2, 2, 3, 2, 3)
    expected = torch.zeros(2, 2, 2, 3, dtype=torch.bool)
    expected[1, 1, :, 2] = True
    assert torch.equal(out["padding"], expected)
    frame, y, x = 3, 1, 2  # clip 1, frame 1
    torch.testing.assert_close(out["logits"][1, 1, :, y, x], head.mlp(memory[frame, y * 3 + x]))
    torch.testing.assert_close(out["valid_ratios"][1, 1], ratios[frame, 0])


def test_criterion_heatmap_term_is_the_focal_loss_over_annotated_joints() -> None:
    gen = torch.Generator().manual_seed(2)
    targets = [random_target(2, 3, 15, gen), random_target(1, 3, 15, gen)]
    outputs = random_outputs(2, 5, 3, 15, gen)
    ratios = torch.tensor([1.0, 0.5]).expand(2, 3, 2).clone()
    padding = torch.zeros(2, 3, 4, 6, dtype=torch.bool)
    padding[:, :, 2:] = True  # the unpadded half of the rows (y ratio 0.5)
    outputs["heatmap"] = {"logits": torch.randn(2, 3, 15, 4, 6, generator=gen), "valid_ratios": ratios,
                          "padding": padding}
    crit = SetCriterion(HungarianMatcher(), {"loss_kpt": 1.0, "loss_heatmap": 3.0}, "l1", heatmap_sigma=1.0)
    got = crit(outputs, targets)["loss_heatmap"]
    total, count = 0.0, 0
    for b, target in enumerate(targets):
        frames = target["labeled"]
        joints = target["visible"] & target["present"][..., None] & frames[None, :, None]
        goal = brute_targets(target["keypoints"], joints, ratios[b], (4, 6), 1.0)
        weight = torch.zeros(3, 15, 4, 6, dtype=torch.bool)
        weight[:, :, :2] = True
        weight &= frames[:, None, None, None]
        total += brute_focal(outputs["heatmap"]["logits"][b], goal, weight.double())
        count += int(joints.sum())
    assert got.item() == pytest.approx(3.0 * total / count, rel=1e-5)


def test_missing_heatmap_and_bad_settings_are_errors() -> None:
    gen = torch.Generator().manual_seed(3)
    crit = SetCriterion(HungarianMatcher(), {"loss_kpt": 1.0, "loss_heatmap": 1.0}, "l1")
    with pytest.raises(ValueError, match="heatmap"):
        crit(random_outputs(1, 4, 3, 15, gen), [random_target(1, 3, 15, gen)])
    with pytest.raises(ValueError, match="heatmap_sigma"):
        SetCriterion(HungarianMatcher(), {"loss_kpt": 1.0}, heatmap_sigma=0.0)
    with pytest.raises(ValueError, match="model.heatmap_head"):
        build(load_config("configs/synthetic_tiny.yaml", ["loss.weight_heatmap=1.0"]))
    vepe = load_config("configs/vepe_tiny.yaml", ["model.heatmap_head=true"]).model
    with pytest.raises(ValueError, match="VEPE"):
        build_model(vepe)


def test_model_emits_heatmaps_in_training_only_and_the_loss_trains_the_encoder() -> None:
    cfg = load_config("configs/synthetic_tiny.yaml", ["model.heatmap_head=true", "loss.weight_heatmap=1.0"])
    torch.manual_seed(0)
    model, crit, _ = build(dataclasses.replace(cfg))
    frames, mask = torch.randn(2, 3, 3, 64, 96), torch.zeros(2, 64, 96, dtype=torch.bool)
    mask[1, :, 64:] = True
    out = model(frames, mask)
    h, w = model.encode(frames[0], mask[:1].expand(3, -1, -1)).shapes[0]
    assert out["heatmap"]["logits"].shape == (2, 3, 15, h, w)
    torch.testing.assert_close(out["heatmap"]["valid_ratios"][1, 0], torch.tensor([64 / 96, 1.0]),
                               atol=1.0 / w, rtol=0)
    padding = out["heatmap"]["padding"]
    assert padding.shape == (2, 3, h, w) and not padding[0].any() and not padding[1, :, :, 0].any()
    assert padding[1, :, :, -1].all()
    gen = torch.Generator().manual_seed(4)
    loss = crit(out, [random_target(2, 3, 15, gen), random_target(1, 3, 15, gen)])["loss_heatmap"]
    loss.backward()
    assert model.heatmap_head.mlp.layers[0].weight.grad.abs().sum() > 0
    assert model.encoder.layers[0].attn.value_proj.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert "heatmap" not in model(frames, mask)
