"""SetCriterion: hand-computed losses, zero persons, keyframe mode, auxiliary loop, distributed split."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from target_factory import random_outputs, random_target

from pavenet.config import Config
from pavenet.model.criterion import SetCriterion, build_criterion
from pavenet.model.matcher import HungarianMatcher
from pavenet.runtime.launch import free_port

SIGMAS = [0.05, 0.1]
ALL = {"loss_class": 1.0, "loss_kpt": 1.0, "loss_oks": 1.0, "loss_vis": 1.0}


def small_case() -> tuple[dict, list[dict]]:
    """Two queries, one track, T=2 (frame 1 unlabelled), J=2; query 1 sits on the track."""
    target = {
        "keypoints": torch.tensor([[[[0.2, 0.2], [0.4, 0.6]], [[0.9, 0.9], [0.9, 0.9]]]]),
        "visible": torch.tensor([[[True, False], [True, True]]]),
        "present": torch.tensor([[True, True]]),
        "labeled": torch.tensor([True, False]),
        "areas": torch.tensor([[0.04, 0.04]]),
        "track_ids": torch.tensor([7]),
        "video_id": 0,
        "key_frame": 0,
    }
    keypoints = torch.zeros(1, 2, 2, 2, 2)
    keypoints[0, 0] = 0.8
    keypoints[0, 1, 0] = torch.tensor([[0.3, 0.1], [0.0, 0.0]])
    outputs = {
        "logits": torch.tensor([[0.0, math.log(3.0)]]),
        "keypoints": keypoints,
        "visibility": torch.tensor([[[[0.0, 0.0], [0.0, 0.0]], [[1.0, -2.0], [5.0, 5.0]]]]),
        "sigma": torch.full((1, 2, 2, 2, 2), 0.1),
    }
    return outputs, [target]


def make_criterion(weights: dict, mode: str = "clip", keypoint_loss: str = "l1", sigmas=SIGMAS) -> SetCriterion:
    torch.manual_seed(0)
    return SetCriterion(HungarianMatcher(mode=mode, sigmas=sigmas), weights, keypoint_loss, sigmas=sigmas)


def test_hand_computed_losses() -> None:
    outputs, targets = small_case()
    losses = make_criterion(ALL)(outputs, targets)
    # focal: query 0 (p = .5, target 0) and query 1 (p = .75, target 1), one track
    focal = 0.75 * 0.5**2 * math.log(2.0) + 0.25 * 0.25**2 * math.log(4.0 / 3.0)
    assert float(losses["loss_class"]) == pytest.approx(focal, rel=1e-5)
    # L1: one annotated joint (frame 0, joint 0): |0.3-0.2| + |0.1-0.2| over 2 coordinates
    assert float(losses["loss_kpt"]) == pytest.approx(0.1, rel=1e-5)
    # OKS: d^2 = 0.02, area 0.04, sigma 0.05 -> exp(-0.02 / (2 * 0.04 * 0.01))
    assert float(losses["loss_oks"]) == pytest.approx(1.0 - math.exp(-25.0), rel=1e-5)
    # visibility: frame 0 only, targets (1, 0), logits (1, -2)
    bce = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(-2.0))) / 2
    assert float(losses["loss_vis"]) == pytest.approx(bce, rel=1e-5)
    assert float(losses["loss"]) == pytest.approx(focal + 0.1 + 1.0 - math.exp(-25.0) + bce, rel=1e-5)


def test_ignored_joints_leave_the_visibility_loss() -> None:
    outputs, targets = small_case()
    # joint 1 of frame 0 lies in an ignore region: only joint 0 (target 1, logit 1) remains
    targets[0]["ignored"] = torch.tensor([[[False, True], [False, False]]])
    losses = make_criterion(ALL)(outputs, targets)
    assert float(losses["loss_vis"]) == pytest.approx(math.log(1 + math.exp(-1.0)), rel=1e-5)
    outputs["visibility"][0, 1, 0, 1] = 50.0  # whatever is predicted there costs nothing
    assert float(make_criterion(ALL)(outputs, targets)["loss_vis"]) == pytest.approx(float(losses["loss_vis"]))


def test_weights_scale_the_terms_and_rle_replaces_l1() -> None:
    outputs, targets = small_case()
    weights = {"loss_class": 0.5, "loss_kpt": 3.0, "loss_oks": 0.0, "loss_vis": 2.0}
    l1 = make_criterion(weights)(outputs, targets)
    assert set(l1) == {"loss_class", "loss_kpt", "loss_vis", "loss"}
    assert float(l1["loss_kpt"]) == pytest.approx(0.3, rel=1e-5)
    crit = make_criterion(weights, keypoint_loss="rle")
    rle = crit(outputs, targets)
    pred, gt = torch.tensor([0.3, 0.1]), torch.tensor([0.2, 0.2])
    expected = crit.rle(pred, torch.full((2,), 0.1), gt).detach()
    assert float(rle["loss_kpt"].detach()) == pytest.approx(3.0 * float(expected), rel=1e-5)


def test_zero_persons_gives_finite_losses_and_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    outputs = random_outputs(2, 5, 3, 15, gen)
    outputs["keypoints"].requires_grad_(True)
    outputs["logits"].requires_grad_(True)
    targets = [random_target(0, 3, 15, gen), random_target(0, 3, 15, gen)]
    weights = dict(ALL, loss_consistency=1.0)
    for kind in ("l1", "rle"):
        losses = make_criterion(weights, keypoint_loss=kind, sigmas=None)(outputs, targets)
        assert all(torch.isfinite(v) for v in losses.values())
        assert losses["loss_kpt"].item() == 0.0 and losses["loss_vis"].item() == 0.0
        losses["loss"].backward()
        assert torch.isfinite(outputs["logits"].grad).all()


def test_keyframe_mode_ignores_non_key_frames() -> None:
    gen = torch.Generator().manual_seed(1)
    outputs = random_outputs(1, 6, 3, 15, gen)
    target = random_target(3, 3, 15, gen, key_frame=1)
    target["present"][:, 1] = True
    crit = make_criterion(dict(ALL, loss_kpt=1.0), mode="keyframe", keypoint_loss="rle", sigmas=None)
    changed = dict(target, keypoints=target["keypoints"].clone(), visible=target["visible"].clone(),
                   present=target["present"].clone(), labeled=torch.tensor([True, True, True]))
    changed["keypoints"][:, [0, 2]] = torch.rand(3, 2, 15, 2, generator=gen)
    changed["visible"][:, [0, 2]] = ~target["visible"][:, [0, 2]]
    changed["present"][:, [0, 2]] = ~target["present"][:, [0, 2]]
    a, b = crit(outputs, [target]), crit(outputs, [changed])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    clip = make_criterion(dict(ALL), mode="clip", sigmas=None)
    assert float(clip(outputs, [target])["loss"]) != float(clip(outputs, [changed])["loss"])


def aux_outputs(gen: torch.Generator) -> dict:
    outputs = random_outputs(2, 6, 3, 15, gen)
    layer = {k: v.clone() for k, v in outputs.items() if k != "embedding"}
    joint = {"keypoints": outputs["keypoints"].clone(), "sigma": outputs["sigma"].clone(),
             "visibility": outputs["visibility"].clone(), "query_mask": torch.rand(2, 6, generator=gen) < 0.5}
    proposal = torch.rand(2, 10, 1, 15, 2, generator=gen).expand(-1, -1, 3, -1, -1)
    outputs["aux_outputs"] = [layer, joint]
    outputs["enc_outputs"] = {"logits": torch.randn(2, 10, generator=gen), "keypoints": proposal,
                              "sigma": torch.full((2, 10, 3, 15, 2), 0.1),
                              "token_mask": torch.arange(10)[None].expand(2, -1) < torch.tensor([[10], [7]])}
    return outputs


def test_auxiliary_loop_names_and_total() -> None:
    gen = torch.Generator().manual_seed(2)
    outputs = aux_outputs(gen)
    targets = [random_target(3, 3, 15, gen), random_target(2, 3, 15, gen)]
    crit = make_criterion(dict(ALL), sigmas=None)
    losses = crit(outputs, targets)
    top = {"loss_class", "loss_kpt", "loss_oks", "loss_vis"}
    # aux_outputs[0] repeats the top level's logits: its class loss is counted once (as _0)
    expected = (top - {"loss_class"}) | {k + "_0" for k in top} | {"loss_kpt_1", "loss_oks_1", "loss_vis_1"}
    expected |= {"loss_class_enc", "loss_kpt_enc", "loss_oks_enc", "loss"}
    assert set(losses) == expected
    for name in top - {"loss_class"}:
        assert torch.allclose(losses[name], losses[name + "_0"])
    total = sum(v for k, v in losses.items() if k != "loss")
    assert torch.allclose(losses["loss"], total)
    enc_only = make_criterion(dict(ALL), mode="keyframe", sigmas=None)
    keyframe = enc_only(outputs["enc_outputs"], targets)
    assert torch.allclose(keyframe["loss_kpt"], losses["loss_kpt_enc"])
    assert torch.allclose(keyframe["loss_class"], losses["loss_class_enc"])


def test_consistency_triplet_hand_computed() -> None:
    gen = torch.Generator().manual_seed(3)
    targets = [random_target(2, 1, 15, gen, video_id=5, track_ids=[1, 2]),
               random_target(1, 1, 15, gen, video_id=5, track_ids=[1])]
    for t in targets:
        t["present"][:], t["visible"][:], t["labeled"][:] = True, True, True
    outputs = random_outputs(2, 2, 1, 15, gen)
    outputs["keypoints"][0, :, 0] = targets[0]["keypoints"][:, 0]
    outputs["keypoints"][1, 0, 0] = targets[1]["keypoints"][0, 0]
    # clip 0: q0 = track 1, q1 = track 2; clip 1: q0 = track 1
    outputs["embedding"] = torch.zeros(2, 2, 2)
    outputs["embedding"][0, 0] = torch.tensor([1.0, 0.0])
    outputs["embedding"][0, 1] = torch.tensor([0.6, 0.8])
    outputs["embedding"][1, 0] = torch.tensor([0.0, 1.0])
    crit = SetCriterion(HungarianMatcher(), {"loss_consistency": 1.0}, "l1", consistency_margin=0.3)
    losses = crit(outputs, targets)
    # triplets (a, p, n): (c0q0, c1q0, c0q1) and (c1q0, c0q0, c0q1); cosine distance = 1 - dot
    first = max(0.0, (1 - 0.0) - (1 - 0.6) + 0.3)
    second = max(0.0, (1 - 0.0) - (1 - 0.8) + 0.3)
    assert float(losses["loss_consistency"]) == pytest.approx((first + second) / 2, rel=1e-5)


def test_build_criterion_from_config() -> None:
    cfg = Config()
    cfg.loss.weight_oks = 0.25
    crit = build_criterion(cfg)
    assert crit.weights["loss_oks"] == 0.25 and crit.weights["loss_class"] == cfg.loss.weight_class
    assert crit.keypoint_loss == "rle" and crit.matcher.cost_keypoint == cfg.matcher.cost_keypoint
    assert sum(p.numel() for p in crit.parameters()) > 0
    with pytest.raises(ValueError, match="keypoint_loss"):
        SetCriterion(HungarianMatcher(), ALL, "l2")


def _rank_loss(rank: int, port: int, outputs: dict, targets: list[dict], result: torch.Tensor) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        local = {k: v[rank:rank + 1] for k, v in outputs.items()}
        loss = make_criterion(dict(ALL), keypoint_loss="rle", sigmas=None)(local, targets[rank:rank + 1])["loss"]
        result[rank] = loss.detach()
    finally:
        dist.destroy_process_group()


def test_loss_does_not_depend_on_the_process_split() -> None:
    gen = torch.Generator().manual_seed(4)
    outputs = random_outputs(2, 5, 3, 15, gen)
    targets = [random_target(3, 3, 15, gen), random_target(1, 3, 15, gen)]
    single = make_criterion(dict(ALL), keypoint_loss="rle", sigmas=None)(outputs, targets)["loss"].detach()
    result = torch.zeros(2).share_memory_()
    mp.spawn(_rank_loss, args=(free_port(), outputs, targets, result), nprocs=2)
    # DDP averages gradients over ranks, so the mean of the per-rank losses is what is optimised
    assert float(result.mean()) == pytest.approx(single.item(), rel=1e-5)


def test_encoder_one_to_many_supervises_k_proposals_per_track() -> None:
    outputs, targets = small_case()
    s = 6
    outputs["enc_outputs"] = {
        "logits": torch.zeros(1, s),  # p = 0.5 for every proposal
        "keypoints": torch.rand(1, s, 2, 2, 2, generator=torch.Generator().manual_seed(0)),
        "sigma": torch.full((1, s, 2, 2, 2), 0.1),
        "token_mask": torch.ones(1, s, dtype=torch.bool),
    }
    pos = 0.25 * 0.25 * math.log(2.0)  # focal term of a positive at p = 0.5
    neg = 0.75 * 0.25 * math.log(2.0)
    for k, positives in ((1, 1), (3, 3)):
        crit = make_criterion({"loss_class": 1.0})
        crit.enc_one_to_many = k
        loss = float(crit(outputs, targets)["loss_class_enc"])
        assert loss == pytest.approx(positives * pos + (s - positives) * neg, rel=1e-5)


def test_oks_class_target_is_a_varifocal_loss_towards_the_matched_oks() -> None:
    outputs, targets = small_case()
    outputs["keypoints"][0, 1, 0, 0] = torch.tensor([0.2 + math.sqrt(0.0008), 0.2])  # OKS exp(-1)
    crit = SetCriterion(HungarianMatcher(sigmas=SIGMAS), {"loss_class": 1.0}, "l1", focal_alpha=0.75,
                        sigmas=SIGMAS, class_target="oks")
    q = math.exp(-1.0)
    # query 0: negative, p = .5 -> 0.75 * p^2 * BCE(target 0); query 1: positive, BCE towards q, weight q
    negative = 0.75 * 0.5**2 * math.log(2.0)
    positive = q * -(q * math.log(0.75) + (1 - q) * math.log(0.25))
    assert float(crit(outputs, targets)["loss_class"]) == pytest.approx(negative + positive, rel=1e-5)
    # a perfect prediction drives the target to 1; the score of a bad pose is pulled down
    outputs["keypoints"][0, 1, 0, 0] = torch.tensor([0.2, 0.2])
    positive = -math.log(0.75)
    assert float(crit(outputs, targets)["loss_class"]) == pytest.approx(negative + positive, rel=1e-5)
    with pytest.raises(ValueError, match="class_target"):
        SetCriterion(HungarianMatcher(), {"loss_class": 1.0}, class_target="iou")
