"""``model.frame_weights="content"``: the frames' shares of the pose-aware attention depend on
what each frame shows (a float64 oracle, a hand-computed case, equality with the published
attention at initialisation, gradients, the attention probe, the full model)."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from test_network import float_tensors, make_model, random_memory
from torch import nn

from pavenet.model.attention_probe import FrameAttentionProbe
from pavenet.model.pose_attention import FrameDeformAttn

SHAPES = [(6, 8), (3, 4)]


def attention(frame_weights, t=3, seed=0):
    torch.manual_seed(seed)
    attn = FrameDeformAttn(32, num_heads=4, num_levels=2, num_points=5, num_frames=t,
                           zero_offsets=True, frame_weights=frame_weights)
    nn.init.normal_(attn.sampling_offsets.weight, std=0.3)
    nn.init.normal_(attn.attention_weights.weight, std=0.3)
    nn.init.normal_(attn.attention_weights.bias, std=0.5)
    return attn.double()


def inputs(b, q, t, seed=1):
    g = torch.Generator().manual_seed(seed)
    memory = random_memory(b, t, SHAPES, seed=seed)
    memory.memory = memory.memory.double()
    memory.valid_ratios = torch.rand(b * t, 2, 2, generator=g, dtype=torch.float64) * 0.5 + 0.5
    query = torch.randn(b, q, 32, generator=g, dtype=torch.float64)
    anchors = torch.rand(b, q, t, 5, 2, generator=g, dtype=torch.float64)
    scale = torch.rand(b, q, t, 1, 1, 2, generator=g, dtype=torch.float64)
    return query, anchors, scale, memory


def oracle(attn, query, anchors, scale, memory):
    """Per frame: a softmax over levels x points, bilinear samples (grid_sample); per head: the
    frame logit log(sum(exp(logits))) plus <W q, v_t> / sqrt(Dh), a softmax over frames."""
    b, q, _ = query.shape
    t = attn.num_frames
    value = attn.value_proj(memory.memory).view(b, t, -1, 4, 8)
    offsets = attn.sampling_offsets(query).view(b, q, t, 4, 2, 5, 2)
    logits = attn.attention_weights(query).view(b, q, t, 4, 10)
    key = attn.content_query(query).view(b, q, 4, 8)
    ratios = memory.valid_ratios.view(b, t, 2, 2)
    fused = torch.zeros(b, q, 4, 8, dtype=torch.float64)
    for bi in range(b):
        frames, frame_logits = [], []
        for ti in range(t):
            within = torch.softmax(logits[bi, :, ti], dim=-1).view(q, 4, 2, 5)
            frame = torch.zeros(q, 4, 8, dtype=torch.float64)
            for li, (h, w) in enumerate(SHAPES):
                start = 0 if li == 0 else SHAPES[0][0] * SHAPES[0][1]
                level = value[bi, ti, start:start + h * w].permute(1, 2, 0).reshape(4, 8, h, w)
                points = (anchors[bi, :, ti, None] + offsets[bi, :, ti, :, li]
                          * scale[bi, :, ti]) * ratios[bi, ti, li]
                sampled = F.grid_sample(level, (2 * points - 1).permute(1, 0, 2, 3),
                                        align_corners=False)  # (M, Dh, Q, P)
                frame += (sampled * within[:, :, li].permute(1, 0, 2)[:, None]).sum(-1).permute(2, 0, 1)
            frames.append(frame)
            frame_logits.append(torch.logsumexp(logits[bi, :, ti], dim=-1)
                                + (key[bi] * frame).sum(-1) / math.sqrt(8))
        share = torch.softmax(torch.stack(frame_logits), dim=0)  # (T, Q, M)
        fused[bi] = sum(share[ti, ..., None] * frames[ti] for ti in range(t))
    return attn.output_proj(fused.view(b, q, 32))


def test_content_weights_match_the_float64_oracle():
    attn = attention("content")
    nn.init.normal_(attn.content_query.weight, std=0.5)
    nn.init.normal_(attn.content_query.bias, std=0.5)
    args = inputs(2, 4, 3)
    got = attn(*args)
    assert got.shape == (2, 4, 32)
    assert torch.allclose(got, oracle(attn, *args), atol=1e-10)


def test_content_weights_start_as_the_published_attention():
    query_mode, content_mode = attention("query"), attention("content")
    missing = content_mode.load_state_dict(query_mode.state_dict(), strict=False).missing_keys
    assert missing == ["content_query.weight", "content_query.bias"]
    args = inputs(2, 5, 3)
    assert torch.allclose(content_mode(*args), query_mode(*args), atol=1e-12)
    before = query_mode.sample_frames(*args)
    assert torch.allclose(content_mode.sample_frames(*args), before, atol=1e-12)


def test_a_dropped_frame_loses_its_share_by_hand():
    """Uniform query logits; frame 0 black (values 0), frames 1 and 2 show u with <k, u> = 8
    per head: score 8 / sqrt(8) = sqrt(8) for frames 1, 2 and 0 for frame 0."""
    attn = FrameDeformAttn(32, 4, 2, 5, 3, zero_offsets=True, frame_weights="content").double()
    with torch.no_grad():
        attn.value_proj.weight.copy_(torch.eye(32))
        attn.output_proj.weight.copy_(torch.eye(32))
        attn.content_query.bias.fill_(1.0)
    memory = random_memory(1, 3, SHAPES)
    u = torch.ones(32, dtype=torch.float64)
    memory.memory = torch.stack([0 * u, u, u])[:, None].expand(3, memory.memory.shape[1], 32).clone()
    query = torch.zeros(1, 2, 32, dtype=torch.float64)
    anchors = torch.full((1, 2, 3, 5, 2), 0.5, dtype=torch.float64)
    scale = torch.ones(1, 2, 3, 1, 1, 2, dtype=torch.float64)
    with FrameAttentionProbe(attn) as probe:
        out = attn(query, anchors, scale, memory)
    e = math.exp(math.sqrt(8))
    expected = torch.tensor([1, e, e], dtype=torch.float64) / (1 + 2 * e)
    (share,) = probe.shares[""]
    assert share.shape == (1, 2, 3)
    assert torch.allclose(share, expected.expand(1, 2, 3).float(), atol=1e-6)
    assert torch.allclose(out, torch.full_like(out, 2 * e / (1 + 2 * e)), atol=1e-12)


def test_content_query_learns_from_zero():
    attn = attention("content").float()
    query, anchors, scale, memory = inputs(1, 3, 3)
    query, anchors, scale = query.float(), anchors.float(), scale.float()
    memory = dataclasses.replace(memory, memory=memory.memory.float(),
                                 valid_ratios=memory.valid_ratios.float())
    attn(query, anchors, scale, memory).square().sum().backward()
    assert attn.content_query.weight.grad.abs().max() > 0
    assert attn.content_query.bias.grad.abs().max() > 0


def test_one_frame_has_no_content_weights():
    attn = FrameDeformAttn(32, 4, 2, 5, 1, zero_offsets=True, frame_weights="content")
    assert attn.frame_weights == "query" and attn.content_query is None
    with pytest.raises(ValueError, match="frame_weights"):
        FrameDeformAttn(32, 4, 2, 5, 3, zero_offsets=True, frame_weights="frames")


def test_model_with_content_weights_trains_and_probes_shares():
    model = make_model(3, frame_weights="content")
    names = [n for n, _ in model.named_parameters() if "content_query" in n]
    assert len(names) == 2 * 3  # two pose-decoder layers and one joint-decoder layer
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(2, 3, 3, 64, 96, generator=g)
    with FrameAttentionProbe(model) as probe:
        out = model(frames, torch.zeros(2, 64, 96, dtype=torch.bool))
    for name, calls in probe.shares.items():
        assert len(calls) == 1, name
        assert torch.allclose(calls[0].sum(-1), torch.ones(calls[0].shape[:2]), atol=1e-5)
    sum((x * torch.randn(x.shape, generator=g)).sum() for x in float_tensors(out)).backward()
    for name in names:
        param = dict(model.named_parameters())[name]
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().max() > 0, name
