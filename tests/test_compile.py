"""``torch.compile`` captures the whole network in one graph (no graph breaks).

Dynamo's ``backend="eager"`` runs the captured graph with the ordinary kernels, so the test
needs no C++ compiler; ``fullgraph=True`` makes any graph break an error. The compiled
outputs must equal the eager ones. On CUDA the deformable attention runs the Triton kernels
(a user-defined kernel inside an autograd.Function), so the CUDA case checks that path too.
"""
import pytest
import torch

from test_network import float_tensors, padded_batch, tiny_cfg

from pavenet.config import load_config
from pavenet.model import build_model

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("which", ["pavenet", "pavenet_pose_pos", "vepe"])
def test_whole_network_compiles_without_graph_breaks(which, device):
    torch._dynamo.reset()
    torch.manual_seed(0)
    if which == "vepe":
        cfg = load_config("configs/vepe_tiny.yaml").model
    else:
        cfg = tiny_cfg(3, query_pos="pose" if which == "pavenet_pose_pos" else "learned")
    model = build_model(cfg).eval().to(device)
    frames, mask = (t.to(device) for t in padded_batch(2, cfg.num_frames))
    with torch.no_grad():
        expected = model(frames, mask)
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        got = compiled(frames, mask)
    assert torch.equal(got["kept_index"], expected["kept_index"])
    pairs = list(zip(float_tensors(got), float_tensors(expected)))
    assert len(pairs) > 10
    tol = 1e-4 if device == "cuda" else 1e-5
    for a, b in pairs:
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
