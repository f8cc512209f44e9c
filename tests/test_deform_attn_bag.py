"""The CPU "bags" formulation of deformable attention against the grid_sample reference and
dense-matrix oracles, its non-finite / far-outside behaviour, and the backend dispatch."""
import functools

import pytest
import torch

from pavenet.config import load_config
from pavenet.model import build
from pavenet.model import deformable_attention as da
from pavenet.model import pose_attention
from pavenet.model.deform_attn_bag import PAD, BilinearBags, corner_entries, padded_table
from pavenet.model.deformable_attention import ms_deform_attn, resolve_backend

SHAPES = [(4, 6), (3, 3), (1, 2)]


def problem(shapes=SHAPES, dtype=torch.float64, n=2, q=7, m=3, dh=5, p=3, seed=0):
    """Random inputs with locations in [-0.3, 1.3], points on the map borders, points far
    outside, and several points of one bag on the same spot (their corners repeat)."""
    g = torch.Generator().manual_seed(seed)
    value = torch.randn(n, sum(h * w for h, w in shapes), m, dh, generator=g, dtype=dtype)
    locations = torch.rand(n, q, m, len(shapes), p, 2, generator=g, dtype=dtype) * 1.6 - 0.3
    locations[0, 0, :, :, 0] = torch.tensor([0.0, 1.0], dtype=dtype)
    locations[0, 1, :, :, :] = locations[0, 1, :, :, :1]
    locations[1, 0, 0, 0, 0] = torch.tensor([40.0, -3.0], dtype=dtype)
    locations[1, 0, 1, 1, 1] = torch.tensor([-1e6, 0.5], dtype=dtype)
    weights = torch.rand(n, q, m, len(shapes), p, generator=g, dtype=dtype)
    grad_out = torch.randn(n, q, m * dh, generator=g, dtype=dtype)
    return value, locations, weights, grad_out


def run(backend, value, locations, weights, grad_out, shapes=SHAPES):
    leaves = [t.detach().clone().requires_grad_() for t in (value, locations, weights)]
    out = ms_deform_attn(leaves[0], shapes, leaves[1], leaves[2], backend=backend)
    out.backward(grad_out)
    return [out.detach()] + [t.grad for t in leaves]


def test_output_and_all_gradients_match_the_reference_in_float64():
    inputs = problem()
    got, expected = run("bags", *inputs), run("reference", *inputs)
    for name, a, b in zip(("output", "value", "locations", "weights"), got, expected):
        assert a.shape == b.shape, name
        assert torch.allclose(a, b, rtol=0, atol=1e-10), (name, (a - b).abs().max())
    # the point far outside reads zeros and gets no gradient
    assert torch.all(got[2][1, 0, 0, 0, 0] == 0) and torch.all(got[2][1, 0, 1, 1, 1] == 0)


def test_float32_at_encoder_like_sizes_matches_the_reference():
    shapes = [(24, 20), (12, 10), (6, 5), (3, 3)]
    inputs = problem(shapes, torch.float32, n=3, q=60, m=4, dh=16, p=4, seed=3)
    got, expected = run("bags", *inputs, shapes=shapes), run("reference", *inputs, shapes=shapes)
    for name, a, b in zip(("output", "value", "locations", "weights"), got, expected):
        scale = b.abs().max()
        assert (a - b).abs().max() <= 1e-5 * scale, (name, (a - b).abs().max() / scale)


def test_gradients_of_a_subset_of_inputs():
    value, locations, weights, grad_out = problem(seed=1)
    full = run("bags", value, locations, weights, grad_out)
    for wanted in range(3):
        leaves = [t.detach().clone().requires_grad_(i == wanted) for i, t in enumerate((value, locations, weights))]
        ms_deform_attn(leaves[0], SHAPES, leaves[1], leaves[2], backend="bags").backward(grad_out)
        assert torch.equal(leaves[wanted].grad, full[1 + wanted])
        assert all(t.grad is None for i, t in enumerate(leaves) if i != wanted)


def test_bilinear_bags_equal_the_dense_matrix_product():
    """out = A @ table with A[r, base + offset_k] += weight: value gradient A^T g, weight
    gradient g . table[row], duplicate rows within and across bags included."""
    shapes = [(2, 3), (1, 1)]
    g = torch.Generator().manual_seed(4)
    locations = torch.rand(1, 3, 2, 2, 2, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    locations[0, 2] = locations[0, 1]
    attention = torch.rand(1, 3, 2, 2, 2, generator=g, dtype=torch.float64)
    base, weight = corner_entries(shapes, locations, attention)
    rows = 2 * sum((h + 2 * PAD) * (w + 2 * PAD) for h, w in shapes)
    table = torch.randn(rows, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weight = weight.clone().requires_grad_()
    dense = torch.zeros(base.shape[0], rows, dtype=torch.float64)
    offsets = torch.tensor([[0, 1, w + 2 * PAD, w + 2 * PAD + 1] for _, w in shapes])
    index = (base[..., None] + offsets[:, None, :]).flatten(1)
    dense.scatter_add_(1, index, weight.detach().flatten(1))
    out = BilinearBags.apply(table, base, weight, shapes)
    assert torch.allclose(out, dense @ table.detach(), atol=1e-12)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    out.backward(grad_out)
    assert torch.allclose(table.grad, dense.t() @ grad_out, atol=1e-12)
    expected = (grad_out[:, None, :] * table.detach()[index]).sum(-1).view_as(weight)
    assert torch.allclose(weight.grad, expected, atol=1e-12)


def test_padded_table_layout():
    value = torch.arange(2 * 8 * 3 * 1, dtype=torch.float64).view(2, 8, 3, 1)  # levels 2x3, 1x2
    table = padded_table(value, [(2, 3), (1, 2)]).view(2, 3, -1)
    first = table[1, 2, :(2 + 2 * PAD) * (3 + 2 * PAD)].view(2 + 2 * PAD, 3 + 2 * PAD)
    assert torch.equal(first[PAD:PAD + 2, PAD:PAD + 3].flatten(), value[1, :6, 2, 0])
    assert first.sum() == value[1, :6, 2, 0].sum()  # everything else is padding zeros


def test_non_finite_locations_give_nan_not_an_index_error():
    value, locations, weights, _ = problem(seed=2)
    locations[0, 3, 1, 2, 0, 0] = float("nan")
    locations[1, 2, 0, 1, 1, 1] = float("inf")
    got = ms_deform_attn(value, SHAPES, locations, weights, backend="bags").view(2, 7, 3, -1)
    assert torch.isnan(got[0, 3, 1]).all() and torch.isnan(got[1, 2, 0]).all()
    finite = torch.ones(2, 7, 3, dtype=torch.bool)
    finite[0, 3, 1] = finite[1, 2, 0] = False
    reference = ms_deform_attn(value, SHAPES, locations, weights, backend="reference").view(2, 7, 3, -1)
    assert torch.allclose(got[finite], reference[finite], atol=1e-10)


def test_dispatch(monkeypatch):
    value, locations, weights, _ = problem(dtype=torch.float32)
    assert resolve_backend("auto", value, locations, weights) == "bags"
    assert torch.equal(ms_deform_attn(value, SHAPES, locations, weights),
                       ms_deform_attn(value, SHAPES, locations, weights, backend="bags"))
    half = (value.bfloat16(), locations, weights.bfloat16())
    assert resolve_backend("auto", *half) == "reference"
    with pytest.raises(ValueError, match=r'backend="bags" needs CPU tensors of float32 or float64, got torch.bfloat16'):
        ms_deform_attn(half[0], SHAPES, half[1], half[2], backend="bags")
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert resolve_backend("auto", value, locations, weights) == "reference"
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    assert resolve_backend("auto", value, locations, weights) == "reference"


def test_whole_network_outputs_and_gradients_match_the_reference(monkeypatch):
    """Every attention of PAVE-Net (encoder, pose-aware over frames, joint decoder) through
    the bags equals the reference, forward and backward (float64; weights moved off their
    initial values, whose pixel-exact sampling points sit where the gradient jumps)."""
    cfg = load_config("pavenet_tiny")
    torch.manual_seed(0)
    model = build(cfg)[0].double().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    frames = torch.rand(1, cfg.model.num_frames, 3, 64, 96, dtype=torch.float64)
    mask = torch.zeros(1, 64, 96, dtype=torch.bool)
    mask[:, :, 80:] = True
    results = {}
    for backend in ("reference", "bags"):
        call = functools.partial(ms_deform_attn, backend=backend)
        monkeypatch.setattr(da, "ms_deform_attn", call)
        monkeypatch.setattr(pose_attention, "ms_deform_attn", call)
        model.zero_grad()
        out = model(frames, mask)
        (out["keypoints"].square().sum() + out["logits"].sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results[backend] = (out["keypoints"].detach(), out["logits"].detach(), grads)
    for a, b in zip(results["bags"], results["reference"]):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9), (a - b).abs().max()
