"""``model.fine_refine``: the last joint correction read from the stride-4 backbone map."""
import dataclasses

import pytest
import torch
from test_network import float_tensors, make_model, padded_batch, tiny_cfg

from pavenet.model import build_model
from pavenet.model.encoder import FrameMemory
from pavenet.model.fine_refine import FineMap, FineRefine, sample_grid
from pavenet.model.heads import inverse_sigmoid


def test_sample_grid_hand_written():
    expected = [[-1, -1], [0, -1], [1, -1], [-1, 0], [0, 0], [1, 0], [-1, 1], [0, 1], [1, 1]]
    assert torch.equal(sample_grid(1), torch.tensor(expected, dtype=torch.float32))
    assert torch.equal(sample_grid(0), torch.zeros(1, 2))


def ramp_maps(n: int, h: int, w: int) -> torch.Tensor:
    """(n, 3, h, w): channel 0 = column, 1 = row (pixel-centre index), 2 = frame index."""
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    return torch.stack([torch.stack((cols, rows, torch.full_like(cols, float(i)))) for i in range(n)])


def test_samples_read_each_frames_map_at_the_grid_around_each_joint():
    """Linear ramps are reproduced exactly by bilinear sampling away from the border, so each
    sample must read its own position: column = x * ratio_x * w - 0.5 + dx (pixel centres), likewise rows;
    channel 2 tells which frame's map was read. The second clip's frames are padded (ratio
    < 1): positions are fractions of the unpadded image."""
    b, k, t, j, h, w = 2, 3, 2, 4, 16, 16
    refine = FineRefine(8, 3, radius=1, hidden=5).double()
    ratio = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.75, 0.625], [0.75, 0.625]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    keypoints = 0.35 + 0.3 * torch.rand(b, k, t, j, 2, generator=g, dtype=torch.float64)
    got = refine.sample(ramp_maps(b * t, h, w), ratio, keypoints)
    assert got.shape == (b, k, t, j, 9, 3)
    grid = sample_grid(1).double()
    for bi in range(b):
        for ti in range(t):
            r = ratio[bi * t + ti]
            x = keypoints[bi, :, ti, :, 0, None] * r[0] * w - 0.5 + grid[:, 0]
            y = keypoints[bi, :, ti, :, 1, None] * r[1] * h - 0.5 + grid[:, 1]
            torch.testing.assert_close(got[bi, :, ti, :, :, 0], x, rtol=0, atol=1e-9)
            torch.testing.assert_close(got[bi, :, ti, :, :, 1], y, rtol=0, atol=1e-9)
            frame = got[bi, :, ti, :, :, 2]
            torch.testing.assert_close(frame, torch.full_like(frame, bi * t + ti), rtol=0, atol=1e-9)


def test_samples_outside_the_map_read_zero():
    refine = FineRefine(8, 3, radius=0, hidden=5).double()
    keypoints = torch.tensor([-0.5, 1.6], dtype=torch.float64).view(1, 1, 1, 1, 2)
    got = refine.sample(ramp_maps(1, 6, 6) + 1.0, torch.ones(1, 2, dtype=torch.float64), keypoints)
    assert torch.equal(got, torch.zeros(1, 1, 1, 1, 1, 3, dtype=torch.float64))


def refine_inputs(seed: int, b: int, k: int, t: int, j: int, d: int, c: int):
    """A generator and float64 (fine map, ratio, joint features, keypoints) for FineRefine."""
    g = torch.Generator().manual_seed(seed)
    fine = torch.randn(b * t, c, 10, 10, generator=g, dtype=torch.float64)
    ratio = torch.ones(b * t, 2, dtype=torch.float64)
    feats = torch.randn(b, k, j, d, generator=g, dtype=torch.float64)
    keypoints = 0.1 + 0.8 * torch.rand(b, k, t, j, 2, generator=g, dtype=torch.float64)
    return g, fine, ratio, feats, keypoints


def hand_move(refine: FineRefine, mlp, fine, ratio, feats, keypoints):
    """One move written out: ``mlp`` of [samples around the joints, joint feature], added in
    inverse-sigmoid space."""
    t = keypoints.shape[2]
    samples = refine.sample(fine, ratio, keypoints).flatten(-2)
    first, last = mlp.layers
    x = torch.cat((samples, feats[:, :, None].expand(-1, -1, t, -1, -1)), -1)
    delta = torch.relu(x @ first.weight.T + first.bias) @ last.weight.T + last.bias
    return torch.sigmoid(inverse_sigmoid(keypoints) + delta)


def test_refinement_starts_as_the_identity_and_moves_by_the_mlp():
    """Zero-initialised: the keypoints come back unchanged; with weights, the move is the
    MLP of [samples, joint feature] in inverse-sigmoid space (written out in float64)."""
    refine = FineRefine(6, 3, radius=1, hidden=7).double()
    g, fine, ratio, feats, keypoints = refine_inputs(1, 1, 2, 3, 4, 6, 3)
    torch.testing.assert_close(refine(fine, ratio, feats, keypoints), keypoints, rtol=0, atol=1e-12)
    with torch.no_grad():
        for param in refine.mlp.parameters():
            param.normal_(0.0, 0.2, generator=g)
    got = refine(fine, ratio, feats, keypoints)
    expected = hand_move(refine, refine.mlp, fine, ratio, feats, keypoints)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert (got - keypoints).abs().max() > 1e-3


def test_later_passes_resample_at_the_moved_joints():
    """``passes=2``: the second MLP reads the map at the joints the first moved (written out in
    float64); zero-initialised, both passes are the identity."""
    refine = FineRefine(6, 3, radius=1, hidden=7, passes=2).double()
    assert len(refine.more) == 1
    g, fine, ratio, feats, keypoints = refine_inputs(3, 1, 2, 2, 3, 6, 3)
    torch.testing.assert_close(refine(fine, ratio, feats, keypoints), keypoints, rtol=0, atol=1e-12)
    with torch.no_grad():
        for param in refine.parameters():
            param.normal_(0.0, 0.2, generator=g)
    moved = hand_move(refine, refine.mlp, fine, ratio, feats, keypoints)
    expected = hand_move(refine, refine.more[0], fine, ratio, feats, moved)
    got = refine(fine, ratio, feats, keypoints)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert (got - moved).abs().max() > 1e-3 and (moved - keypoints).abs().max() > 1e-3
    with pytest.raises(ValueError, match="fine_passes must be >= 1"):
        FineRefine(6, 3, 1, 7, passes=0)


def test_fine_map_ignores_padding():
    """The map of an image padded in a batch equals its map alone, and is zero on padding."""
    fine_map = FineMap(5, 8).double()
    g = torch.Generator().manual_seed(2)
    alone = torch.randn(1, 5, 6, 8, generator=g, dtype=torch.float64)
    padded = torch.zeros(1, 5, 12, 16, dtype=torch.float64)
    padded[..., :6, :8] = alone
    padded[..., 6:, :] = 3.0  # junk under the padding
    mask = torch.ones(1, 48, 64, dtype=torch.bool)
    mask[:, :24, :32] = False
    got, ratio = fine_map(padded, mask)
    ref, ref_ratio = fine_map(alone, torch.zeros(1, 24, 32, dtype=torch.bool))
    torch.testing.assert_close(got[..., :6, :8], ref, rtol=0, atol=1e-12)
    assert torch.equal(got[..., 6:, :], torch.zeros_like(got[..., 6:, :]))
    assert torch.equal(ratio, torch.tensor([[0.5, 0.5]], dtype=torch.float32))
    assert torch.equal(ref_ratio, torch.ones(1, 2))


def gradients(model, frames, mask, seed: int = 1) -> dict:
    model.zero_grad()
    out = model(frames, mask)
    g = torch.Generator().manual_seed(seed)
    sum((x * torch.randn(x.shape, generator=g)).sum() for x in float_tensors(out)).backward()
    return {n: p.grad for n, p in model.named_parameters()}


def test_network_with_fine_refinement():
    """The option adds the fine map and refinement only; the MLP's zero last layer learns
    first, then every new parameter; decoding cached per-frame memories (as the video
    predictor does) equals the forward pass."""
    model = make_model(3, fine_refine=True).train()
    plain = set(build_model(tiny_cfg(3)).state_dict())
    added = set(model.state_dict()) - plain
    assert added and all(n.startswith(("fine_map.", "joint_decoder.fine.")) for n in added)
    frames, mask = padded_batch(2, 3)
    grads = gradients(model, frames, mask)
    last = "joint_decoder.fine.mlp.layers.1."
    assert all(grads[last + p].abs().max() > 0 for p in ("weight", "bias"))
    assert grads["fine_map.conv.weight"].abs().max() == 0  # behind the zero layer, for now
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        model.joint_decoder.fine.mlp.layers[1].weight.normal_(0.0, 0.05, generator=g)
    grads = gradients(model, frames, mask)
    for name in added:
        assert grads[name] is not None and grads[name].abs().max() > 0, name
    model.eval()
    video = torch.randn(5, 3, 64, 96, generator=g)
    clips = torch.stack([video[i:i + 3] for i in range(3)])
    with torch.no_grad():
        for param in model.joint_decoder.fine.mlp.parameters():
            param.normal_(0.0, 0.05, generator=g)
        direct = model(clips, torch.zeros(3, 64, 96, dtype=torch.bool))
        cache = [model.encode(video[i:i + 1], torch.zeros(1, 64, 96, dtype=torch.bool)) for i in range(5)]
        memory = FrameMemory.cat(cache).select(torch.tensor([0, 1, 2, 1, 2, 3, 2, 3, 4]))
        cached = model.decode(memory, batch=3)
    assert memory.fine.shape == (9, 32, 16, 24)
    torch.testing.assert_close(cached["keypoints"], direct["keypoints"], rtol=0, atol=1e-5)
    unrefined = dataclasses.replace(memory, fine=torch.zeros_like(memory.fine))
    with torch.no_grad():
        moved = model.decode(unrefined, batch=3)["keypoints"]
    assert (moved - direct["keypoints"]).abs().max() > 1e-4


def test_fine_refinement_errors():
    model = make_model(3, fine_refine=True).eval()
    frames, mask = padded_batch(1, 3)
    with torch.no_grad():
        memory = model.encode_clips(frames, mask)
    with pytest.raises(ValueError, match="fine map"):
        model.decode(dataclasses.replace(memory, fine=None, fine_ratio=None), batch=1)
    plain = dataclasses.replace(memory, fine=None, fine_ratio=None)
    for items in ([memory, plain], [plain, memory]):
        with pytest.raises(ValueError, match="some memories have a fine map"):
            FrameMemory.cat(items)
    with pytest.raises(ValueError, match="model.arch=pavenet"):
        build_model(dataclasses.replace(tiny_cfg(3, fine_refine=True), arch="vepe"))
    backbone = dataclasses.replace(tiny_cfg().backbone, out_indices=[0, 1, 2])
    with pytest.raises(ValueError, match="a stage before"):
        build_model(tiny_cfg(3, fine_refine=True, backbone=backbone))
    with pytest.raises(ValueError, match="fine_radius"):
        build_model(tiny_cfg(3, fine_refine=True, fine_radius=-1))
