"""The released PAVE-Net's rules kept as switches: proposal validity, pose-box bound, value
masking, plain GroupNorm, per-frame joint refinement, the official post-processing and resize."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pavenet.data.joints import RELEASED_OKS_SIGMAS
from pavenet.data.transforms import resize_frames
from pavenet.model.backbone import ChannelMapper
from pavenet.model.encoder import FrameMemory, token_centers
from pavenet.model.joint_decoder import JointHeads
from pavenet.model.pose_attention import FrameDeformAttn
from pavenet.model.pose_decoder import pose_box_scale
from pavenet.model.postprocess import PostProcessor, oks_nms, pose_oks_matrix
from pavenet.model.query_init import QueryInit


def test_proposal_margin_tokens_are_never_selected() -> None:
    torch.manual_seed(0)
    shapes = ((20, 30), (10, 15))
    s = sum(h * w for h, w in shapes)
    ratios = torch.ones(1, 2, 2)
    centers = token_centers(shapes, ratios)[0]
    outside = ((centers <= 0.02) | (centers >= 0.98)).any(-1)
    assert outside.sum() == 2 * 20  # the finest level's first and last columns (0.5/30 < 0.02)
    init = QueryInit(8, num_queries=40, num_joints=3, hidden=[8], margin=0.02)
    with torch.no_grad():  # make the border tokens' zeroed memory score highest: their
        # feature is LN(bias), the classifier's direction; any other unit-variance feature scores lower
        init.enc_output.weight.copy_(torch.eye(8))
        init.enc_output.bias.copy_(torch.linspace(-1, 1, 8))
        init.cls.weight.copy_(torch.nn.functional.layer_norm(init.enc_output.bias, (8,))[None])
        init.cls.bias.zero_()
    memory = torch.randn(1, s, 8)
    res = init(memory, torch.zeros(1, s, dtype=torch.bool), shapes, ratios)
    logits = res.proposals["logits"][0]
    assert logits[outside].min() > logits[~outside].max()  # they would win a plain top-k
    assert (res.reference < 1.0).all()  # a selected border token would give the reference (1, 1)
    assert torch.equal(res.proposals["token_mask"][0], ~outside)
    assert (res.proposals["keypoints"][0, outside] == 1.0).all()
    # their features come from zeroed memory: one value for all of them
    assert torch.allclose(logits[outside], logits[outside][0].expand(int(outside.sum())))


def test_pose_box_scale_bound_in_padded_units() -> None:
    ref = torch.tensor([[0.2, 0.3], [0.2, 0.3 + 1e-6], [0.6, 0.3]]).view(1, 1, 1, 3, 2)
    plain = pose_box_scale(ref)
    assert plain.shape == (1, 1, 1, 1, 1, 2)
    torch.testing.assert_close(plain.flatten(), torch.tensor([0.2, 0.5e-6]))
    ratios = torch.tensor([[1.0, 1.0], [0.5, 0.8]]).view(1, 1, 2, 2)  # (B, T, L, 2)
    bounded = pose_box_scale(ref, ratios, 1e-4)
    assert bounded.shape == (1, 1, 1, 2, 1, 2)
    # width 0.4: 0.4 * r >= 1e-4, unchanged; height 1e-6: bounded to 1e-4 / r in unpadded units
    expect = torch.tensor([[0.2, 0.5e-4], [0.2, 0.5e-4 / 0.8]])
    torch.testing.assert_close(bounded.view(2, 2), expect)


def _memory(padding: torch.Tensor, d: int = 8) -> FrameMemory:
    n, s = padding.shape
    return FrameMemory(torch.randn(n, s, d), torch.tensor([[2, 3]]), torch.tensor([0]),
                       torch.ones(n, 1, 2), padding, ((2, 3),))


def test_value_mask_before_projection_keeps_the_bias_on_padding() -> None:
    torch.manual_seed(0)
    padding = torch.zeros(1, 6, dtype=torch.bool)
    padding[0, 4:] = True
    mem = _memory(padding)
    before = FrameDeformAttn(8, 2, 1, 2, 1, zero_offsets=True, value_mask="before_proj")
    after = FrameDeformAttn(8, 2, 1, 2, 1, zero_offsets=True)
    after.load_state_dict(before.state_dict())
    with torch.no_grad():
        before.value_proj.bias.uniform_(1.0, 2.0)
        after.value_proj.bias.copy_(before.value_proj.bias)
    vb, va = before.project_value(mem), after.project_value(mem)
    assert torch.equal(va[0, 4:], torch.zeros_like(va[0, 4:]))
    torch.testing.assert_close(vb[0, 4:].flatten(1), before.value_proj.bias.expand(2, 8))
    torch.testing.assert_close(vb[0, :4], va[0, :4])


def test_plain_neck_equals_masked_without_padding_and_differs_with_it() -> None:
    torch.manual_seed(0)
    masked = ChannelMapper([16, 32], 32, extra_levels=1)
    plain = ChannelMapper([16, 32], 32, extra_levels=1, masked=False)
    plain.load_state_dict(masked.state_dict())
    feats = [torch.randn(1, 16, 8, 12), torch.randn(1, 32, 4, 6)]
    none = torch.zeros(1, 32, 48, dtype=torch.bool)
    for a, b in zip(masked(feats, none)[0], plain(feats, none)[0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    pad = none.clone()
    pad[:, :, 24:] = True
    ref = torch.nn.functional.group_norm(plain.proj[0](feats[0]), 32, plain.norms[0].weight, plain.norms[0].bias)
    torch.testing.assert_close(plain(feats, pad)[0][0], ref)
    assert not torch.allclose(masked(feats, pad)[0][0], ref)


def test_per_frame_joint_refinement_uses_each_frames_own_mlp() -> None:
    torch.manual_seed(0)
    heads = JointHeads(8, num_frames=3, per_frame=True)
    with torch.no_grad():
        for w in heads.refine.weights:
            w.normal_()
    feats = torch.randn(2, 4, 5, 8)  # (B, K, J, D)
    ref = torch.full((2, 4, 3, 5, 2), 0.5)  # logit 0: keypoints = sigmoid(residual)
    out = heads(feats, ref)["keypoints"]
    assert out.shape == (2, 4, 3, 5, 2)
    for t in range(3):
        x = feats
        for i, (w, b) in enumerate(zip(heads.refine.weights, heads.refine.biases)):
            x = x @ w[t] + b[t]
            x = torch.relu(x) if i < 2 else x
        torch.testing.assert_close(out[:, :, t], torch.sigmoid(x))


def _outputs(keypoints: torch.Tensor, logits: torch.Tensor, sigma: torch.Tensor) -> dict:
    q, t = keypoints.shape[:2]
    return {"keypoints": keypoints[None], "logits": logits[None], "sigma": sigma[None],
            "visibility": torch.full((1, q, t, keypoints.shape[2]), -3.0),
            "embedding": torch.eye(q)[None]}


def test_official_postprocessing_hand_made_poses() -> None:
    j = 15
    base = torch.stack([torch.linspace(0.2, 0.4, j), torch.linspace(0.2, 0.6, j)], -1)
    poses = torch.stack([base, base + 0.002, base + torch.tensor([0.4, 0.0]), base + 0.5])
    keypoints = poses[:, None].expand(4, 3, j, 2).clone()  # (Q, T, J, 2), the same in every frame
    keypoints[3] = keypoints[3].clamp(max=1.05)  # y up to 1.05: outside the image, clamped
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])  # scores 0.881, 0.731, 0.5, 0.269
    sigma = torch.full((4, 3, j, 2), 0.1)
    sigma[2, :, 0] = torch.tensor([0.05, 0.2])
    post = PostProcessor(top_k=4, score_threshold=0.0, mode="official")
    frames = post(_outputs(keypoints, logits, sigma), torch.tensor([[100, 200]]))[0]
    assert len(frames) == 3
    key = frames[1]
    # query 1 duplicates query 0 (OKS ~1 > 0.45): suppressed; order by decreasing score
    assert key["query_index"].tolist() == [0, 2, 3]
    scores = torch.sigmoid(logits)
    torch.testing.assert_close(key["scores"], scores[[0, 2, 3]])
    p = 0.7 * (1 - math.exp(-2.0)) ** 2  # sigma 0.1 on both axes
    torch.testing.assert_close(key["keypoints"][0, :, 2], torch.full((j,), float(scores[0]) * p))
    p0 = 0.7 * (1 - math.exp(-4.0)) * (1 - math.exp(-1.0))  # sigma (0.05, 0.2)
    assert key["keypoints"][1, 0, 2].item() == pytest.approx(float(scores[2]) * p0, rel=1e-6)
    w = p ** 5 / (p ** 5 + 1e-10)
    px = poses[0] * torch.tensor([200.0, 100.0]) * w
    torch.testing.assert_close(key["keypoints"][0, :, :2], px)
    last = key["keypoints"][2, :, :2]
    assert last[:, 0].max().item() == pytest.approx(180.0 * w) and last[:, 1].max().item() == pytest.approx(100.0 * w)
    assert (last[:, 1] == last[:, 1].max()).sum() == 4  # the four joints with y > 1
    for t in (0, 2):  # the key frame's decision holds for the clip
        assert frames[t]["query_index"].tolist() == [0, 2, 3]
    nms_free = PostProcessor(top_k=4, score_threshold=0.0)(_outputs(keypoints, logits, sigma),
                                                           torch.tensor([[100, 200]]))[0][1]
    assert nms_free["query_index"].tolist() == [0, 1, 2, 3]


def test_oks_nms_against_a_loop_over_pairs() -> None:
    gen = torch.Generator().manual_seed(3)
    poses = torch.rand(12, 15, 2, generator=gen) * 50
    poses[5] = poses[2] + 0.5
    poses[9] = poses[2] - 0.3
    scores = torch.rand(12, generator=gen)
    sig = torch.as_tensor(RELEASED_OKS_SIGMAS)
    oks = pose_oks_matrix(poses, sig)
    p = poses.double().numpy()
    for a in range(12):
        for b in range(12):
            area_a = np.ptp(p[a, :, 0]) * np.ptp(p[a, :, 1])
            area_b = np.ptp(p[b, :, 0]) * np.ptp(p[b, :, 1])
            d2 = ((p[a] - p[b]) ** 2).sum(-1)
            e = d2 / (2 * RELEASED_OKS_SIGMAS) ** 2 / ((area_a + area_b) / 2 + np.spacing(1)) / 2
            assert oks[a, b].item() == pytest.approx(np.exp(-e).mean(), rel=1e-12)
    keep = oks_nms(poses, scores, 0.45, sig).tolist()
    order = np.argsort(-scores.numpy(), kind="stable").tolist()
    expect, alive = [], list(order)
    while alive:
        i = alive.pop(0)
        expect.append(i)
        alive = [k for k in alive if oks[i, k] <= 0.45]
    assert keep == expect and len(keep) < 12


def test_official_resize_equals_a_float64_bilinear_oracle() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    out_w, out_h = 29, 23
    got = resize_frames([frame], (out_w, out_h), "official")[0]
    img = frame.astype(np.float64)
    expect = np.zeros((out_h, out_w, 3))
    for y in range(out_h):
        for x in range(out_w):  # half-pixel centres, coordinates clamped at the borders
            sy = max((y + 0.5) * 37 / out_h - 0.5, 0.0)
            sx = max((x + 0.5) * 53 / out_w - 0.5, 0.0)
            y0, x0 = int(sy), int(sx)
            y1, x1 = min(y0 + 1, 36), min(x0 + 1, 52)
            fy, fx = sy - y0, sx - x0
            expect[y, x] = ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x1])
                            + fy * ((1 - fx) * img[y1, x0] + fx * img[y1, x1]))
    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    np.testing.assert_allclose(got.permute(1, 2, 0).double().numpy(), (expect - mean) / std, atol=2e-5)
    antialiased = resize_frames([frame], (out_w, out_h), "antialias")[0]
    assert antialiased.shape == got.shape and not torch.allclose(antialiased, got, atol=1e-2)
