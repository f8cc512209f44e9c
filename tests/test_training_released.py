"""Training as released: joint decoder on every matched query, RLE as released (residual term,
prior, one flow per stage), released OKS sigmas, each loss counted once, references not detached."""
from __future__ import annotations

import math

import pytest
import torch
from target_factory import random_target
from test_overfit import SIZE, synthetic_clip

from pavenet.config import load_config
from pavenet.data.clips import make_item
from pavenet.data.collate import collate
from pavenet.data.joints import RELEASED_OKS_SIGMAS
from pavenet.data.transforms import ClipParams
from pavenet.model import build
from pavenet.model.criterion import SetCriterion
from pavenet.model.joint_selection import MatchedQuerySelector
from pavenet.model.matcher import HungarianMatcher, build_matcher
from pavenet.model.rle import RLELoss


def _identity_flow(loss: RLELoss) -> None:
    """Zero the coupling nets' last layers: s = t = 0, the flow is the identity."""
    with torch.no_grad():
        for nets in (loss.flow.s_nets, loss.flow.t_nets):
            for net in nets:
                net[4].weight.zero_()
                net[4].bias.zero_()


def test_released_rle_hand_computed() -> None:
    loss = RLELoss(variant="released")
    _identity_flow(loss)
    pred, gt, sigma = torch.tensor([0.3, 0.4]), torch.tensor([0.2, 0.6]), torch.tensor([0.1, 0.4])
    e = [(0.3 - 0.2) / 0.1, (0.4 - 0.6) / 0.4]  # 1.0, -0.5
    log_phi = -0.5 * ((e[0] - 0.5) ** 2 + (e[1] - 0.5) ** 2) - math.log(2 * math.pi)  # N(0.5, I) base
    expect = sum(math.log(s) - log_phi + math.log(s * math.sqrt(2 * math.pi)) + abs(x) / math.sqrt(2)
                 for s, x in zip((0.1, 0.4), e))
    assert loss(pred, sigma, gt).item() == pytest.approx(expect, rel=1e-5)
    ours = RLELoss()
    _identity_flow(ours)
    log_phi0 = -0.5 * (e[0] ** 2 + e[1] ** 2) - math.log(2 * math.pi)
    expect0 = sum(math.log(s) - log_phi0 + math.log(2 * s) + abs(x) for s, x in zip((0.1, 0.4), e))
    assert ours(pred, sigma, gt).item() == pytest.approx(expect0, rel=1e-5)


def _pavenet_outputs(gen: torch.Generator) -> dict:
    """A PAVE-Net-shaped output: 3 pose layers, one joint layer, the top level = the last joint
    layer with the last pose layer's logits (the same tensor)."""
    q, t, j = 6, 3, 15

    def layer(logits=None):
        out = {"keypoints": torch.rand(1, q, t, j, 2, generator=gen),
               "sigma": 0.05 + 0.2 * torch.rand(1, q, t, j, 2, generator=gen)}
        if logits is not None:
            out["logits"] = logits
        return out

    pose = [layer(torch.randn(1, q, generator=gen)) for _ in range(3)]
    kept = torch.tensor([[4, 1]])
    joint = layer()
    joint["query_mask"] = torch.zeros(1, q, dtype=torch.bool).scatter(1, kept, True)
    top = {**layer(pose[-1]["logits"]), "kept_index": kept}
    return {**top, "aux_outputs": [*pose, joint]}


def test_each_class_loss_once_and_joint_outputs_use_the_last_pose_layers_matching() -> None:
    gen = torch.Generator().manual_seed(0)
    outputs = _pavenet_outputs(gen)
    targets = [random_target(3, 3, 15, gen)]
    weights = {"loss_class": 1.0, "loss_kpt": 1.0}
    crit = SetCriterion(HungarianMatcher(), weights, "l1")
    losses = crit(outputs, targets)
    assert "loss_class" not in losses  # the top level's logits are those of aux_outputs[2]
    assert {"loss_class_0", "loss_class_1", "loss_class_2"} <= set(losses)
    match = crit.matcher(outputs["aux_outputs"][2], targets)
    q, g = match[0]
    keep = torch.isin(q, torch.tensor([4, 1]))
    m = crit.gather([(q[keep], g[keep])], targets, False, torch.device("cpu"))
    expect = crit.loss_keypoints_l1(outputs, m)
    assert losses["loss_kpt"].item() == pytest.approx(expect.item(), rel=1e-6)
    total = sum(v for k, v in losses.items() if k != "loss")
    assert losses["loss"].item() == pytest.approx(total.item(), rel=1e-6)


def test_released_rle_has_one_flow_per_stage_and_per_coordinate_normaliser() -> None:
    gen = torch.Generator().manual_seed(1)
    outputs = _pavenet_outputs(gen)
    outputs["enc_outputs"] = {"logits": torch.randn(1, 20, generator=gen),
                              "keypoints": torch.rand(1, 20, 3, 15, 2, generator=gen),
                              "sigma": 0.1 + 0.1 * torch.rand(1, 20, 3, 15, 2, generator=gen)}
    targets = [random_target(2, 3, 15, gen)]
    targets[0]["present"][:] = True  # both tracks in the key frame: every stage has matches
    targets[0]["visible"][:] = True
    crit = SetCriterion(HungarianMatcher(), {"loss_kpt": 1.0}, "rle", rle="released")
    assert set(crit.rle) == {"enc", "dec", "joint"}
    losses = crit(outputs, targets)
    losses["loss"].backward()
    for stage in ("enc", "dec", "joint"):
        grads = [p.grad for p in crit.rle[stage].parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), stage
    match = crit.matcher(outputs["aux_outputs"][0], targets)
    m = crit.gather(match, targets, False, torch.device("cpu"))
    out = outputs["aux_outputs"][0]
    raw = crit.rle["dec"](out["keypoints"][m.batch, m.query][m.joints], out["sigma"][m.batch, m.query][m.joints],
                          m.keypoints[m.joints])
    expect = raw.sum() / (2 * m.joints.sum())
    assert losses["loss_kpt_0"].item() == pytest.approx(expect.item(), rel=1e-6)


def test_released_oks_sigmas_reach_matcher_and_criterion() -> None:
    cfg = load_config("configs/pavenet_r50.yaml")
    _, crit, _ = build(cfg)
    assert torch.allclose(crit.matcher.sigmas, torch.as_tensor(RELEASED_OKS_SIGMAS))
    assert torch.allclose(crit.sigmas.double(), torch.as_tensor(RELEASED_OKS_SIGMAS))
    assert crit.matcher.mode == "keyframe" and crit.rle_variant == "released"
    assert build_matcher(load_config("configs/synthetic_tiny.yaml").matcher).sigmas is None


def test_selector_puts_matched_queries_first_then_the_best_others() -> None:
    gen = torch.Generator().manual_seed(2)
    outputs = {"logits": torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]),
               "keypoints": torch.rand(2, 6, 3, 15, 2, generator=gen)}
    targets = [random_target(2, 3, 15, gen), random_target(1, 3, 15, gen)]
    outputs["keypoints"][0, 5] = targets[0]["keypoints"][0]  # low scores, exact poses
    outputs["keypoints"][0, 4] = targets[0]["keypoints"][1]
    outputs["keypoints"][1, 0] = targets[1]["keypoints"][0]
    kept = MatchedQuerySelector(HungarianMatcher(cost_class=0.0))(outputs, targets)
    assert kept.shape == (2, 2)
    assert sorted(kept[0].tolist()) == [4, 5]
    assert kept[1].tolist() == [0, 5]  # its match, then its best-scoring other query


def _batch_and_model(joint_train: str, detach: bool = True):
    cfg = load_config("configs/synthetic_tiny.yaml",
                      [f"model.joint_train={joint_train}", "model.num_kept=1", "loss.weight_oks=0",
                       f"model.detach_references={str(detach).lower()}", "model.dropout=0.0"])
    torch.manual_seed(0)
    model, crit, _ = build(cfg)
    batch = collate([make_item(synthetic_clip(4), ClipParams(short_side=SIZE, max_size=SIZE))])
    return model.train(), crit, batch


def test_joint_decoder_gets_gradients_for_a_matched_query_outside_the_top_k() -> None:
    grads = {}
    for mode in ("topk", "matched"):
        model, crit, batch = _batch_and_model(mode)
        out = model(batch["frames"], batch["mask"], batch["targets"])
        last_pose = out["aux_outputs"][len(model.pose_decoder.layers) - 1]
        assert last_pose["logits"] is out["logits"]
        matched = crit.matcher(last_pose, batch["targets"])[0][0]
        top1 = last_pose["logits"][0].argmax()
        assert len(matched) >= 2  # so at least one matched query is outside the top-1
        if mode == "matched":
            assert sorted(out["kept_index"][0].tolist()) == sorted(matched.tolist())
        else:
            assert out["kept_index"][0].tolist() == [int(top1)]
        losses = crit(out, batch["targets"])
        head = model.joint_decoder.heads[-1].refine.layers[-1].weight
        grads[mode] = torch.autograd.grad(losses["loss_kpt"], head, allow_unused=True)[0]
        grads[f"{mode}_queries"] = out["kept_index"].shape[1]
    assert grads["matched_queries"] > grads["topk_queries"] == 1
    assert grads["matched"] is not None and grads["matched"].abs().sum() > 0
    if int(top1) not in matched.tolist():  # top-1 unmatched: no joint-decoder keypoint loss at all
        assert grads["topk"] is None or grads["topk"].abs().sum() == 0


def test_references_carry_gradients_between_layers_only_when_not_detached() -> None:
    seen = {}
    for detach in (True, False):
        model, crit, batch = _batch_and_model("topk", detach)
        out = model(batch["frames"], batch["mask"], batch["targets"])
        last = out["aux_outputs"][1]["keypoints"]  # the second (last) pose-decoder layer
        head = model.pose_decoder.heads[0].refine.weights[-1]  # moves only layer 0's keypoints
        grad = torch.autograd.grad(last.sum(), head, allow_unused=True)[0]
        seen[detach] = 0.0 if grad is None else grad.abs().sum().item()
    assert seen[True] == 0.0 and seen[False] > 0.0


def test_progress_bar_shows_the_class_loss_of_the_last_layer_that_has_one() -> None:
    from pavenet.engine.logger import shown_losses

    losses = {"loss": 1.0, "loss_kpt": 0.5, "loss_class_0": 0.3, "loss_class_2": 0.125,
              "loss_class_10": 0.0625, "loss_kpt_0": 0.7, "loss_class_enc": 0.9}
    assert shown_losses(losses) == {"loss": "1", "loss_kpt": "0.5", "loss_class": "0.0625"}
    assert shown_losses({"loss_class": 0.5, "loss_class_1": 0.25}) == {"loss_class": "0.5"}
