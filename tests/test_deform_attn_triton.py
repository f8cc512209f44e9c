"""Triton multi-scale deformable attention against the PyTorch reference, and the dispatch.

On CPU the kernels run in Triton's interpreter. ``triton.jit`` reads ``TRITON_INTERPRET`` when
the kernels are decorated (at import), so the interpreter cases run once in a subprocess that
executes this file as a script and prints the measured errors as JSON; the tests assert on them.
"""
import copy
import functools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from pavenet.model import deform_attn_triton
from pavenet.model import deformable_attention as da
from pavenet.model.deformable_attention import MSDeformAttn, ms_deform_attn

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(5, 7), (3, 4), (2, 2)]
FP32_ATOL = 1e-4
BF16_RTOL = 2e-2
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def random_problem(shapes, dtype=torch.float32, n=2, q=5, m=2, dh=8, p=3, seed=0,
                   device="cpu"):
    """Random inputs with locations in [-0.3, 1.3] plus points exactly on the map borders.

    The upstream gradient is scaled to keep location gradients (which scale with the map
    size) around 10, so float32 rounding stays well below the 1e-4 absolute tolerance."""
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, dh, generator=g)
    locations = torch.rand(n, q, m, len(shapes), p, 2, generator=g) * 1.6 - 0.3
    locations = away_from_pixel_centres(locations, shapes)
    locations[0, 0, :, :, 0] = 0.0
    locations[0, 0, :, :, 1] = 1.0
    locations[1, 0, :, :, 0] = torch.tensor([0.0, 1.0])
    locations[1, 1, :, :, 0] = torch.tensor([0.5, 1.0])
    weights = torch.rand(n, q, m, len(shapes), p, generator=g)
    grad_out = torch.randn(n, q, m * dh, generator=g) * 0.25
    return [t.to(device=device, dtype=dtype) for t in (value, locations, weights, grad_out)]


def away_from_pixel_centres(locations, shapes):
    """Move random points off the last few ulps around integer pixel coordinates, where the
    location gradient jumps and two roundings of ``loc * size - 0.5`` could pick other cells."""
    size = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float64)[:, None, :]
    pixel = locations.double() * size - 0.5
    near = (pixel - pixel.round()).abs() < 1e-3
    return torch.where(near, locations + (2e-3 / size).float(), locations)


def run_backend(backend, shapes, value, locations, weights, grad_out):
    """Output and the gradients of value, locations and weights for one upstream gradient."""
    inputs = [t.detach().clone().requires_grad_() for t in (value, locations, weights)]
    out = ms_deform_attn(inputs[0], shapes, inputs[1], inputs[2], backend=backend)
    out.backward(grad_out)
    return [out.detach()] + [t.grad for t in inputs]


def max_errors(got, expected, relative=False):
    """Max abs difference per tensor (divided by the expected max abs when relative)."""
    errors = []
    for g, e in zip(got, expected):
        err = (g.double() - e.double()).abs().max().item()
        errors.append(err / max(e.double().abs().max().item(), 1e-12) if relative else err)
    return errors


def parity_errors(shapes, dtype, reference_dtype, **kwargs):
    """Triton in ``dtype`` against the reference in ``reference_dtype`` on the same inputs."""
    value, locations, weights, grad_out = random_problem(shapes, dtype, **kwargs)
    got = run_backend("triton", shapes, value, locations, weights, grad_out)
    assert all(t.dtype == dtype for t in got)
    expected = run_backend("reference", shapes, *(t.to(reference_dtype) for t in
                                                  (value, locations, weights, grad_out)))
    return max_errors(got, expected, relative=dtype != torch.float32)


def interpreter_cases():
    """Run in the subprocess (TRITON_INTERPRET=1); returns the measured errors by case."""
    torch.set_num_threads(1)
    results = {
        "fp32_3_levels": parity_errors(SHAPES, torch.float32, torch.float32, seed=0),
        "fp32_2_levels_dh4": parity_errors(SHAPES[:2], torch.float32, torch.float32, dh=4,
                                           seed=1),
        "bf16_vs_bf16_reference": parity_errors(SHAPES, torch.bfloat16, torch.bfloat16,
                                                seed=2)[:1],
        "bf16_vs_fp32_reference": parity_errors(SHAPES, torch.bfloat16, torch.float32, seed=3),
    }
    value, locations, weights, _ = random_problem(SHAPES, torch.float32, seed=4)
    strided = locations.transpose(1, 2).contiguous().transpose(1, 2)
    mixed = ms_deform_attn(value.bfloat16(), SHAPES, strided, weights, backend="triton")
    reference = ms_deform_attn(value.bfloat16(), SHAPES, locations, weights, backend="reference")
    results["mixed_dtypes_strided"] = max_errors([mixed], [reference], relative=True)
    results["auto_on_cpu_is_bags"] = bool(torch.equal(
        ms_deform_attn(value, SHAPES, locations, weights),
        ms_deform_attn(value, SHAPES, locations, weights, backend="bags")))
    results["errors"] = [caught_error(value.double(), SHAPES, locations, weights),
                         caught_error(value, SHAPES[:2] + [(3, 3)], locations, weights)]
    return results


def caught_error(value, shapes, locations, weights):
    """The ``type: message`` of the error backend="triton" raises (None when it runs)."""
    try:
        ms_deform_attn(value, shapes, locations, weights, backend="triton")
    except (ValueError, RuntimeError) as error:
        return f"{type(error).__name__}: {error}"
    return None


@pytest.fixture(scope="module")
def interpreted():
    if not deform_attn_triton.HAS_TRITON:
        pytest.skip("triton is not importable")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_interpreter_float32_parity(interpreted):
    for case in ("fp32_3_levels", "fp32_2_levels_dh4"):
        names = ("output", "grad value", "grad locations", "grad weights")
        for name, err in zip(names, interpreted[case]):
            assert err <= FP32_ATOL, f"{case} {name}: max abs error {err:.3g}"


def test_interpreter_bfloat16_parity(interpreted):
    for case in ("bf16_vs_bf16_reference", "bf16_vs_fp32_reference", "mixed_dtypes_strided"):
        for err in interpreted[case]:
            assert err <= BF16_RTOL, f"{case}: relative error {err:.3g}"


def test_interpreter_dispatch_and_errors(interpreted):
    assert interpreted["auto_on_cpu_is_bags"]
    float64_error, size_error = interpreted["errors"]
    assert float64_error.startswith("ValueError") and "torch.float64" in float64_error
    assert size_error.startswith("ValueError") and "tokens" in size_error


def test_auto_on_cpu_is_the_bags_path_and_both_cpu_paths_match_the_oracle():
    value, locations, weights, _ = random_problem(SHAPES, torch.float64, seed=5)
    default = ms_deform_attn(value, SHAPES, locations, weights)
    for backend in ("auto", "bags"):
        got = ms_deform_attn(value, torch.tensor(SHAPES), locations, weights, backend=backend)
        assert torch.equal(got, default)
    naive = pytest.importorskip("test_deformable_attention").naive_ms_deform_attn
    expected = naive(value, SHAPES, locations, weights)
    reference = ms_deform_attn(value, SHAPES, locations, weights, backend="reference")
    assert torch.allclose(default, expected, atol=1e-10)
    assert torch.allclose(reference, expected, atol=1e-10)


def test_triton_backend_on_cpu_without_interpreter_is_an_error():
    if deform_attn_triton.INTERPRET:
        pytest.skip("TRITON_INTERPRET=1 in this process: the kernels run on CPU")
    value, locations, weights, _ = random_problem(SHAPES)
    with pytest.raises(RuntimeError, match='backend="triton"'):
        ms_deform_attn(value, SHAPES, locations, weights, backend="triton")
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        ms_deform_attn(value, SHAPES, locations, weights, backend="cuda")


def test_level_table_rows_cached_eager_and_traced_under_compile():
    shapes = ((2, 3), (4, 1), (1, 5))
    truth = torch.tensor([[2, 3, 0], [4, 1, 6], [1, 5, 10]], dtype=torch.int32)
    table = deform_attn_triton._level_table(shapes, torch.device("cpu"))
    assert torch.equal(table, truth)
    assert deform_attn_triton._level_table(shapes, torch.device("cpu")) is table

    def offset_sum(x):
        return x + deform_attn_triton._level_table(shapes, x.device)[:, 2].sum()

    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = torch.compile(offset_sum, fullgraph=True, backend="eager")(torch.ones(()))
    assert got.item() == 17
    assert not [w for w in caught if "lru_cache" in str(w.message)]


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_parity_at_larger_sizes(dtype):
    shapes = [(24, 37), (12, 19), (6, 10), (3, 5)]
    kwargs = {"n": 3, "q": 300, "m": 8, "dh": 32, "p": 4, "device": "cuda"}
    value, locations, weights, grad_out = random_problem(shapes, dtype, **kwargs)
    got = run_backend("triton", shapes, value, locations, weights, grad_out)
    expected = run_backend("reference", shapes, *(t.float() for t in
                                                  (value, locations, weights, grad_out)))
    limit = 1e-5 if dtype == torch.float32 else BF16_RTOL
    errors = max_errors(got, expected, relative=True)
    assert max(errors) <= limit, errors


@CUDA
def test_cuda_auto_picks_triton():
    value, locations, weights, _ = random_problem(SHAPES, device="cuda")
    auto = ms_deform_attn(value, SHAPES, locations, weights)
    triton_out = ms_deform_attn(value, SHAPES, locations, weights, backend="triton")
    assert torch.equal(auto, triton_out)


def module_run(attn, inputs, backend, monkeypatch):
    """Output and two parameter gradients of ``attn`` with ``ms_deform_attn`` on ``backend``."""
    monkeypatch.setattr(da, "ms_deform_attn", functools.partial(ms_deform_attn, backend=backend))
    attn.zero_grad()
    out = attn(*inputs)
    out.float().square().sum().backward()
    return [out.detach(), attn.value_proj.weight.grad, attn.sampling_offsets.weight.grad]


@CUDA
def test_cuda_module_in_bfloat16(monkeypatch):
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=256, num_heads=8, num_levels=4, num_points=4).cuda()
    attn_bf16 = copy.deepcopy(attn).bfloat16()
    shapes = [(32, 40), (16, 20), (8, 10), (4, 5)]
    s = sum(h * w for h, w in shapes)
    inputs = [torch.randn(2, 100, 256), torch.rand(2, 100, 4, 2), torch.randn(2, s, 256)]
    inputs = [t.to(device="cuda", dtype=torch.bfloat16) for t in inputs]
    truth = module_run(attn, [t.float() for t in inputs] + [shapes], "reference", monkeypatch)
    triton_errors = max_errors(module_run(attn_bf16, inputs + [shapes], "triton", monkeypatch),
                               truth, relative=True)
    reference_errors = max_errors(
        module_run(attn_bf16, inputs + [shapes], "reference", monkeypatch), truth, relative=True)
    # bfloat16 projections dominate both errors; the kernel must not add to them
    for got, ref in zip(triton_errors, reference_errors):
        assert got <= max(2.0 * ref, BF16_RTOL), (triton_errors, reference_errors)


if __name__ == "__main__":
    print(json.dumps(interpreter_cases()))
