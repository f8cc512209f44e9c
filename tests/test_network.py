"""PAVENet forward contract, gradients, frame isolation, caching and padding invariance."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from test_overfit import SIZE, synthetic_clip
from torch import nn

from pavenet.config import load_config
from pavenet.data.clips import make_item
from pavenet.data.collate import collate
from pavenet.data.transforms import ClipParams
from pavenet.model import build
from pavenet.model.encoder import FrameMemory
from pavenet.model import build_model
from pavenet.model.pose_attention import FrameDeformAttn

TOP_KEYS = {"logits", "keypoints", "visibility", "sigma", "embedding", "kept_index",
            "aux_outputs", "enc_outputs"}


def tiny_cfg(num_frames=3, **changes):
    cfg = load_config("configs/pavenet_tiny.yaml").model
    return dataclasses.replace(cfg, num_frames=num_frames, **changes)


def make_model(num_frames=3, seed=0, **changes):
    """Tiny model whose zero-initialised refinement heads are perturbed, so that decoder
    layers really move the keypoints (at initialisation they return their references)."""
    torch.manual_seed(seed)
    model = build_model(tiny_cfg(num_frames, **changes))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".refine." in name:
                param.add_(0.05 * torch.randn_like(param))
    return model


def padded_batch(b, t, h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(b, t, 3, h, w, generator=g)
    mask = torch.zeros(b, h, w, dtype=torch.bool)
    if b > 1:
        mask[1, 32:, :] = True
        mask[1, :, 64:] = True
        frames[1, :, :, 32:, :] = 0
        frames[1, :, :, :, 64:] = 0
    return frames, mask


def float_tensors(tree):
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point():
            yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from float_tensors(value)
    else:
        for value in tree:
            yield from float_tensors(value)


@pytest.mark.parametrize("t,b", [(1, 1), (1, 2), (3, 1), (3, 2), (5, 2)])
def test_forward_contract(t, b):
    model = make_model(t).eval()
    frames, mask = padded_batch(b, t)
    with torch.no_grad():
        out = model(frames, mask)
    q, k, j, s = 30, 8, 15, 8 * 12 + 4 * 6 + 2 * 3 + 1 * 2
    assert set(out) == TOP_KEYS
    assert out["logits"].shape == (b, q)
    assert out["keypoints"].shape == out["sigma"].shape == (b, q, t, j, 2)
    assert out["visibility"].shape == (b, q, t, j)
    assert out["embedding"].shape == (b, q, 64)
    assert torch.allclose(out["embedding"].norm(dim=-1), torch.ones(b, q), atol=1e-5)
    kept = out["kept_index"]
    assert kept.dtype == torch.int64 and kept.shape == (b, k)
    expected_kept = out["logits"].topk(k, dim=1).indices
    assert torch.equal(kept.sort(1).values, expected_kept.sort(1).values)
    assert all(torch.isfinite(x).all() for x in float_tensors(out))
    assert out["keypoints"].min() >= 0 and out["keypoints"].max() <= 1
    assert out["sigma"].min() > 0
    enc = out["enc_outputs"]
    assert set(enc) == {"logits", "keypoints", "sigma", "token_mask"}
    assert enc["logits"].shape == enc["token_mask"].shape == (b, s)
    assert enc["keypoints"].shape == enc["sigma"].shape == (b, s, t, j, 2)
    assert torch.equal(enc["keypoints"][:, :, 0], enc["keypoints"][:, :, -1])
    assert enc["token_mask"][0].all()
    if b > 1:  # image 1 is 32x64 of 64x96: 4x8 + 2x4 + 1x2 real tokens at strides 8-32;
        # at stride 64 (1x2 cells) the nearest-neighbour mask samples x=0 and x=48: both real
        assert int(enc["token_mask"][1].sum()) == 32 + 8 + 2 + 2
    aux = out["aux_outputs"]
    assert len(aux) == 2  # 2 pose-decoder layers, 1 joint-decoder layer (the final one)
    for layer in aux:
        assert set(layer) == {"logits", "keypoints", "visibility", "sigma"}
        assert layer["keypoints"].shape == (b, q, t, j, 2)
    assert torch.equal(aux[-1]["logits"], out["logits"])
    # the joint decoder replaces exactly the kept queries of the last pose-decoder layer
    kept_mask = torch.zeros(b, q, dtype=torch.bool).scatter(1, kept, True)
    same = (out["keypoints"] == aux[-1]["keypoints"]).flatten(2).all(-1)
    assert torch.equal(same, ~kept_mask)


def test_joint_decoder_aux_entries_carry_query_mask():
    model = make_model(3, joint_dec_layers=2).eval()
    frames, mask = padded_batch(2, 3)
    with torch.no_grad():
        out = model(frames, mask)
    aux = out["aux_outputs"]
    assert len(aux) == 2 + 1
    joint = aux[-1]
    assert set(joint) == {"keypoints", "visibility", "sigma", "query_mask"}
    expected = torch.zeros(2, 30, dtype=torch.bool).scatter(1, out["kept_index"], True)
    assert torch.equal(joint["query_mask"], expected)
    assert torch.equal(joint["keypoints"][~expected], aux[1]["keypoints"][~expected])
    assert not torch.equal(joint["keypoints"][expected], out["keypoints"][expected])


@pytest.mark.parametrize("query_pos", ["learned", "pose"])
def test_every_parameter_gets_a_finite_nonzero_gradient(query_pos):
    model = make_model(3, query_pos=query_pos).train()
    frames, mask = padded_batch(2, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(1)
    # zero-initialised layers (refinement outputs, sampling-offset weights, timm's last BN
    # of each residual block) block some gradients at initialisation; one step opens them
    for _ in range(2):
        opt.zero_grad()
        out = model(frames, mask)
        loss = sum((x * torch.randn(x.shape, generator=g)).sum() for x in float_tensors(out))
        loss.backward()
        opt.step()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().max() > 0, name


def random_memory(b, t, shapes, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in shapes)
    padding = torch.zeros(b * t, s, dtype=torch.bool)
    ratios = torch.ones(b * t, len(shapes), 2)
    return FrameMemory(torch.randn(b * t, s, d, generator=g), torch.tensor(shapes),
                       torch.tensor([0, shapes[0][0] * shapes[0][1]]), ratios, padding,
                       tuple(shapes))


def random_attention(t=3, d=32, seed=0):
    torch.manual_seed(seed)
    attn = FrameDeformAttn(d, num_heads=4, num_levels=2, num_points=5, num_frames=t,
                           zero_offsets=True)
    nn.init.normal_(attn.sampling_offsets.weight, std=0.3)
    nn.init.normal_(attn.attention_weights.weight, std=0.3)
    return attn


def test_pose_attention_matches_oracle_with_one_softmax_over_frames():
    b, t, q, shapes = 2, 3, 4, [(6, 8), (3, 4)]
    attn = random_attention(t).double()
    memory = random_memory(b, t, shapes)
    memory.memory = memory.memory.double()
    memory.valid_ratios = torch.rand(b * t, 2, 2, dtype=torch.float64) * 0.5 + 0.5
    query = torch.randn(b, q, 32, dtype=torch.float64)
    anchors = torch.rand(b, q, t, 5, 2, dtype=torch.float64)
    scale = torch.rand(b, q, t, 1, 1, 2, dtype=torch.float64)
    got = attn(query, anchors, scale, memory)
    value = attn.value_proj(memory.memory).view(b, t, -1, 4, 8)
    offsets = attn.sampling_offsets(query).view(b, q, t, 4, 2, 5, 2)
    logits = attn.attention_weights(query).view(b, q, t, 4, 2, 5).double()
    exp = (logits - logits.amax(dim=(2, 4, 5), keepdim=True)).exp()
    weights = exp / exp.sum(dim=(2, 4, 5), keepdim=True)
    ratios = memory.valid_ratios.view(b, t, 2, 2)
    fused = torch.zeros(b, q, 4, 8, dtype=torch.float64)
    for bi in range(b):
        for ti in range(t):
            for li, (h, w) in enumerate(shapes):
                start = 0 if li == 0 else shapes[0][0] * shapes[0][1]
                level = value[bi, ti, start:start + h * w].permute(1, 2, 0).reshape(4, 8, h, w)
                points = (anchors[bi, :, ti, None] + offsets[bi, :, ti, :, li]
                          * scale[bi, :, ti]) * ratios[bi, ti, li]  # (Q, M, P, 2)
                grid = (2 * points - 1).permute(1, 0, 2, 3)
                sampled = F.grid_sample(level, grid, align_corners=False)  # (M, Dh, Q, P)
                wgt = weights[bi, :, ti, :, li].permute(1, 0, 2)[:, None]
                fused[bi] += (sampled * wgt).sum(-1).permute(2, 0, 1)
    expected = attn.output_proj(fused.view(b, q, 32))
    assert torch.allclose(got, expected, atol=1e-10)


def test_frame_t_reads_only_frame_t_memory():
    b, t, shapes = 2, 3, [(6, 8), (3, 4)]
    attn = random_attention(t)
    memory = random_memory(b, t, shapes)
    query = torch.randn(b, 7, 32)
    anchors = torch.rand(b, 7, t, 5, 2)
    scale = torch.full((b, 7, t, 1, 1, 2), 0.2)
    before = attn.sample_frames(query, anchors, scale, memory)
    changed = dataclasses.replace(memory, memory=memory.memory.clone())
    changed.memory[0 * t + 2] += torch.randn_like(changed.memory[2])  # clip 0, frame 2
    after = attn.sample_frames(query, anchors, scale, changed)
    assert torch.equal(after[:, :2], before[:, :2])
    assert torch.equal(after[1], before[1])
    assert not torch.allclose(after[0, 2], before[0, 2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extreme_attention_logits_stay_finite(dtype):
    b, t, q, shapes = 1, 3, 6, [(6, 8), (3, 4)]
    attn = random_attention(t)
    nn.init.zeros_(attn.attention_weights.weight)
    with torch.no_grad():  # +1e4 on every other (frame, head, level, point), -1e4 elsewhere
        signs = torch.ones(attn.attention_weights.bias.numel())
        signs[1::2] = -1
        attn.attention_weights.bias.copy_(1e4 * signs)
    attn = attn.to(dtype)
    memory = random_memory(b, t, shapes)
    memory.memory = memory.memory.to(dtype)
    memory.valid_ratios = memory.valid_ratios.to(dtype)
    query = torch.randn(b, q, 32, dtype=dtype)
    anchors = torch.rand(b, q, t, 5, 2, dtype=dtype)
    scale = torch.full((b, q, t, 1, 1, 2), 0.1, dtype=dtype)
    _, weights = attn.sampling(query, anchors, scale, memory.valid_ratios.view(b, t, 2, 2))
    out = attn(query, anchors, scale, memory)
    assert torch.isfinite(out).all()
    total = weights.float().sum(dim=(1, 4, 5))  # over frames, levels, points
    assert torch.allclose(total, torch.ones_like(total), atol=1e-2)
    top = weights.float().permute(0, 2, 3, 1, 4, 5).flatten(-4)  # (B, Q, M, T*L*P)
    n_top = (signs.view(t, 4, 10) > 0).sum().item() // 4
    assert torch.allclose(top.max(-1).values, torch.full_like(top[..., 0], 1.0 / n_top),
                          atol=1e-2)


def test_decoding_cached_frame_memories_equals_forward():
    model = make_model(3).eval()
    g = torch.Generator().manual_seed(3)
    video = torch.randn(5, 3, 64, 96, generator=g)
    clips = torch.stack([video[i:i + 3] for i in range(3)])  # windows 0-2, 1-3, 2-4
    mask = torch.zeros(3, 64, 96, dtype=torch.bool)
    with torch.no_grad():
        direct = model(clips, mask)
        cache = model.encode(video, torch.zeros(5, 64, 96, dtype=torch.bool))
        order = torch.tensor([0, 1, 2, 1, 2, 3, 2, 3, 4])
        cached = model.decode(cache.select(order), batch=3)
    for key in ("logits", "keypoints", "visibility", "sigma", "embedding"):
        assert torch.allclose(cached[key], direct[key], atol=1e-5), key
    assert torch.equal(cached["kept_index"], direct["kept_index"])
    assert torch.allclose(cached["enc_outputs"]["logits"], direct["enc_outputs"]["logits"],
                          atol=1e-5)


@pytest.mark.parametrize("t", [3, 5])
def test_neighbour_grad_off_trains_through_the_key_frames_only(t):
    """``model.neighbour_grad=False``: in training, the memory of every frame equals the
    all-frames encoding, and its gradient is that of the all-frames encoding with the non-key
    frames' memory detached (the oracle). In eval mode the switch changes nothing. (Frozen
    BatchNorm: trainable BatchNorm takes its statistics from each pass's frames.)"""
    backbone = dataclasses.replace(tiny_cfg().backbone, frozen_bn=True)
    model = make_model(t, dropout=0.0, backbone=backbone).train()
    frames, mask = padded_batch(2, t)
    params = [p for m in (model.backbone, model.mapper, model.encoder) for p in m.parameters() if p.requires_grad]
    params.append(model.level_embed)
    full = model.encode_clips(frames, mask)
    is_key = (torch.arange(2 * t) % t == model.key_frame)[:, None, None]
    weights = torch.randn(full.memory.shape, generator=torch.Generator().manual_seed(1))
    oracle = torch.autograd.grad((torch.where(is_key, full.memory, full.memory.detach()) * weights).sum(), params)
    model.neighbour_grad = False
    part = model.encode_clips(frames, mask)
    torch.testing.assert_close(part.memory, full.memory, rtol=1e-5, atol=1e-5)
    assert torch.equal(part.padding_mask, full.padding_mask) and torch.equal(part.valid_ratios, full.valid_ratios)
    got = torch.autograd.grad((part.memory * weights).sum(), params)
    for g, o in zip(got, oracle):
        torch.testing.assert_close(g, o, rtol=1e-3, atol=1e-4 * float(o.abs().max()))  # float32 sums
    assert sum(g.abs().sum() for g in got) > 0
    with torch.no_grad():
        assert torch.equal(model.eval().encode_clips(frames, mask).memory,
                           model.encode(frames.flatten(0, 1), mask.repeat_interleave(t, 0)).memory)


def test_proposals_come_from_the_key_frame_only():
    model = make_model(3).eval()
    frames, mask = padded_batch(1, 3)
    changed = frames.clone()
    changed[:, 0] = torch.randn_like(changed[:, 0])
    with torch.no_grad():
        a, b = model(frames, mask), model(changed, mask)
    assert torch.equal(a["enc_outputs"]["logits"], b["enc_outputs"]["logits"])
    assert not torch.allclose(a["keypoints"], b["keypoints"])
    assert not torch.allclose(a["embedding"], b["embedding"])
    changed[:, 1] = torch.randn_like(changed[:, 1])
    with torch.no_grad():
        c = model(changed, mask)
    assert not torch.allclose(a["enc_outputs"]["logits"], c["enc_outputs"]["logits"])


class PoolingBackbone(nn.Module):
    """Average pooling at strides 8/16/32 then 1x1 convs: exactly padding-invariant on
    cells wholly inside the image (a CNN is not: its border cells see the padding)."""

    def __init__(self, channels=(128, 256, 512)) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3, c, 1) for c in channels)

    def forward(self, images):
        return [torch.tanh(conv(F.avg_pool2d(images, s))) for conv, s in zip(self.convs, (8, 16, 32))]


def test_an_image_padded_in_a_batch_decodes_as_when_alone():
    model = make_model(3).eval()
    model.backbone = PoolingBackbone(model.backbone.channels)
    g = torch.Generator().manual_seed(4)
    small = torch.randn(1, 3, 3, 64, 128, generator=g)
    big = torch.randn(1, 3, 3, 192, 192, generator=g)
    batch = torch.cat([F.pad(small, (0, 64, 0, 128)), big])
    mask = torch.zeros(2, 192, 192, dtype=torch.bool)
    mask[0, 64:] = True
    mask[0, :, 128:] = True
    with torch.no_grad():
        alone = model(small, torch.zeros(1, 64, 128, dtype=torch.bool))
        padded = model(batch, mask)
    assert torch.allclose(padded["logits"][0], alone["logits"][0], atol=1e-4)
    assert torch.allclose(padded["keypoints"][0], alone["keypoints"][0], atol=1e-4)
    assert torch.allclose(padded["sigma"][0], alone["sigma"][0], atol=1e-4)
    assert torch.equal(padded["kept_index"][0], alone["kept_index"][0])
    real = padded["enc_outputs"]["token_mask"][0]
    assert torch.allclose(padded["enc_outputs"]["logits"][0][real],
                          alone["enc_outputs"]["logits"][0], atol=1e-4)


def test_level_count_must_match_the_backbone():
    with pytest.raises(ValueError, match="num_levels=5"):
        build_model(tiny_cfg(3, num_levels=5))


def test_sine_encode_hand_computed():
    from pavenet.model.position_encoding import sine_encode

    # 4 channels per value: frequencies 1, 1, 1/100, 1/100 after scaling by 2 pi
    out = sine_encode(torch.tensor([[0.25, 0.5]]), 4)
    a, b = math.pi / 2, math.pi
    expected = [math.sin(a), math.cos(a), math.sin(a / 100), math.cos(a / 100),
                math.sin(b), math.cos(b), math.sin(b / 100), math.cos(b / 100)]
    assert out.shape == (1, 8)
    assert torch.allclose(out[0], torch.tensor(expected), atol=1e-6)


def test_pose_position_encodes_the_key_frame_box_only():
    from pavenet.model.pose_decoder import PosePosition
    from pavenet.model.position_encoding import sine_encode

    torch.manual_seed(0)
    enc = PosePosition(16)
    ref = torch.rand(2, 3, 3, 5, 2)
    out = enc(ref)
    key = ref[:, :, 1]
    lo, hi = key.amin(-2), key.amax(-2)
    box = torch.cat(((lo + hi) / 2, hi - lo), -1)
    assert torch.allclose(out, enc.mlp(sine_encode(box, 4)), atol=1e-6)
    moved = ref.clone()
    moved[:, :, 0] += 0.1
    moved[:, :, 1] = moved[:, :, 1, torch.randperm(5)]  # joint order does not change the box
    assert torch.allclose(enc(moved), out, atol=1e-6)
    moved[:, :, 1, 0] = 0.0  # the key-frame box does
    assert not torch.allclose(enc(moved), out, atol=1e-3)
    with pytest.raises(ValueError, match="divisible by 8"):
        PosePosition(12)


@pytest.mark.parametrize("config", ["synthetic_tiny.yaml", "vepe_tiny.yaml"])
def test_bfloat16_autocast_forward_and_training_step(config):
    """Under bf16 autocast (``train.amp`` / ``predict --amp`` on CUDA; CPU autocast here) the
    pose- and joint-decoder outputs differ in dtype: the network must merge them (it raised in
    scatter before), stay close to float32, and give a finite loss and gradients."""
    torch.manual_seed(0)
    model, criterion, _ = build(load_config(f"configs/{config}"))
    batch = collate([make_item(synthetic_clip(4), ClipParams(short_side=SIZE, max_size=SIZE))] * 2)
    model.train()  # both passes in training mode (batch statistics), same dropout draws
    torch.manual_seed(1)
    with torch.no_grad():
        expected = model(batch["frames"], batch["mask"])
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(batch["frames"], batch["mask"])
        loss = criterion(got, batch["targets"])["loss"].float()
    for key in ("keypoints", "visibility", "sigma"):
        assert got[key].shape == expected[key].shape and torch.isfinite(got[key]).all()
    # per-token encoder proposals involve no top-k (the queries do: bf16 rounding may reorder
    # near-tied random-init scores, so per-query outputs are not comparable)
    got_enc, expected_enc = got["enc_outputs"], expected["enc_outputs"]
    diff = (got_enc["keypoints"].float() - expected_enc["keypoints"]).abs().max().item()
    assert diff < 0.02, diff
    scale = expected_enc["logits"].abs().max().item()
    assert (got_enc["logits"].float() - expected_enc["logits"]).abs().max().item() < 0.02 * scale
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and len(grads) > 10
    assert all(torch.isfinite(g).all() for g in grads)
