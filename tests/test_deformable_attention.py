"""ms_deform_attn (reference and bags backends) against a naive per-point bilinear oracle,
gradcheck, and MSDeformAttn init."""
import math

import pytest
import torch

from pavenet.model.deformable_attention import MSDeformAttn, ms_deform_attn

SHAPES = [(3, 5), (2, 3), (1, 2)]
CPU_BACKENDS = pytest.mark.parametrize("backend", ["reference", "bags"])


def naive_ms_deform_attn(value, shapes, locations, weights):
    """Per point: pixel coords x*W - 0.5, y*H - 0.5; four corners, zero outside the map."""
    n, _, m, dh = value.shape
    _, q, _, num_levels, p, _ = locations.shape
    out = torch.zeros(n, q, m, dh, dtype=value.dtype)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    for b in range(n):
        for qi in range(q):
            for hi in range(m):
                for lv, (h, w) in enumerate(shapes):
                    for pi in range(p):
                        x = locations[b, qi, hi, lv, pi, 0].item() * w - 0.5
                        y = locations[b, qi, hi, lv, pi, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        acc = torch.zeros(dh, dtype=value.dtype)
                        for cx, cy in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                            if 0 <= cx < w and 0 <= cy < h:
                                wgt = (1 - abs(x - cx)) * (1 - abs(y - cy))
                                acc += wgt * value[b, starts[lv] + cy * w + cx, hi]
                        out[b, qi, hi] += weights[b, qi, hi, lv, pi] * acc
    return out.view(n, q, m * dh)


def random_inputs(dtype=torch.float64, n=2, q=3, m=2, dh=3, p=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in SHAPES)
    value = torch.randn(n, s, m, dh, generator=g, dtype=dtype)
    # locations in [-0.3, 1.3]: many points partly or fully outside the maps
    locations = torch.rand(n, q, m, len(SHAPES), p, 2, generator=g, dtype=dtype) * 1.6 - 0.3
    weights = torch.rand(n, q, m, len(SHAPES), p, generator=g, dtype=dtype)
    return value, locations, weights


@CPU_BACKENDS
def test_matches_naive_bilinear_including_outside_points(backend):
    value, locations, weights = random_inputs()
    outside = ((locations < 0) | (locations > 1)).any(-1)
    assert outside.any() and (~outside).any()
    expected = naive_ms_deform_attn(value, SHAPES, locations, weights)
    tensor_shapes = torch.tensor(SHAPES, dtype=torch.long)
    got = ms_deform_attn(value, tensor_shapes, locations, weights, backend=backend)
    assert got.shape == (2, 3, 2 * 3)
    assert torch.allclose(got, expected, rtol=0, atol=1e-10)
    assert torch.allclose(ms_deform_attn(value, SHAPES, locations, weights, backend=backend), got,
                          rtol=0, atol=0)


@CPU_BACKENDS
def test_hand_computed_corners_and_centres(backend):
    # one 2x2 level, one head, one channel: values 1, 2 / 3, 4
    value = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 4, 1, 1)
    points = torch.tensor([[0.25, 0.25], [0.75, 0.75], [0.5, 0.5], [0.0, 0.0], [1.5, 0.5]],
                          dtype=torch.float64)
    locations = points.view(1, 5, 1, 1, 1, 2)
    weights = torch.ones(1, 5, 1, 1, 1, dtype=torch.float64)
    got = ms_deform_attn(value, [(2, 2)], locations, weights, backend=backend).flatten()
    # centre of pixel (0,0) -> 1; of (1,1) -> 4; map centre -> mean 2.5;
    # top-left corner -> a quarter of pixel (0,0); x = 1.5 lies a full pixel outside -> 0
    expected = torch.tensor([1.0, 4.0, 2.5, 0.25, 0.0], dtype=torch.float64)
    assert torch.allclose(got, expected, atol=1e-12)


@CPU_BACKENDS
def test_gradcheck(backend):
    value, locations, weights = random_inputs(n=1, q=2, m=2, dh=2, p=2, seed=1)
    inputs = (value.requires_grad_(), locations.requires_grad_(), weights.requires_grad_())
    assert torch.autograd.gradcheck(lambda v, l, w: ms_deform_attn(v, SHAPES, l, w, backend=backend),
                                    inputs, eps=1e-6, atol=1e-5)


def test_level_count_mismatch_is_an_error():
    value, locations, weights = random_inputs()
    with pytest.raises(ValueError, match="2 spatial shapes for 3 levels"):
        ms_deform_attn(value, SHAPES[:2], locations, weights)


def test_module_initialisation_and_reference_sampling():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, num_heads=4, num_levels=2, num_points=3).double()
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
    bias = attn.sampling_offsets.bias.view(4, 2, 3, 2)
    # head 0 points along +x, head 1 along +y, head 2 along -x; point i at radius i + 1
    assert torch.allclose(bias[0, :, :, 0], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert torch.allclose(bias[1, 1, :, 1], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert torch.allclose(bias[2, 0, :, 0], -torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert torch.count_nonzero(attn.attention_weights.weight) == 0
    shapes = [(4, 6), (2, 3)]
    src = torch.randn(2, 30, 16, dtype=torch.float64)
    query = torch.randn(2, 5, 16, dtype=torch.float64)
    refs = torch.rand(2, 5, 2, 2, dtype=torch.float64)
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[1, 20:] = True
    out = attn(query, refs, src, shapes, mask)
    # oracle: uniform weights 1/(L*P), offsets = bias / level size
    value = attn.value_proj(src).masked_fill(mask[..., None], 0).view(2, 30, 4, 4)
    normalizer = torch.tensor([[6.0, 4.0], [3.0, 2.0]], dtype=torch.float64)
    locs = refs[:, :, None, :, None] + bias[None, None] / normalizer[None, None, None, :, None]
    weights = torch.full((2, 5, 4, 2, 3), 1.0 / 6, dtype=torch.float64)
    expected = attn.output_proj(naive_ms_deform_attn(value, shapes, locs, weights))
    assert torch.allclose(out, expected, atol=1e-10)
