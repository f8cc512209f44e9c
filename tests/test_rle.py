"""RealNVP flow and RLE loss: Jacobian log-determinant, normalisation, inverse, hand-computed loss."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pavenet.model.rle import RealNVP, RLELoss


def random_flow(seed: int) -> RealNVP:
    """A float64 flow far from the identity (the default init is nearly the identity)."""
    torch.manual_seed(seed)
    flow = RealNVP(init_gain=1.0).double()
    for module in flow.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.bias, std=0.3)
    return flow


def test_structure_is_three_coupling_pairs_of_2_64_64_2_nets() -> None:
    flow = RealNVP()
    assert len(flow.s_nets) == len(flow.t_nets) == 6
    shapes = [tuple(m.weight.shape) for m in flow.s_nets[0] if isinstance(m, nn.Linear)]
    assert shapes == [(64, 2), (64, 64), (2, 64)]
    assert isinstance(flow.s_nets[0][-1], nn.Tanh) and not isinstance(flow.t_nets[0][-1], nn.Tanh)


def test_log_det_equals_autograd_jacobian() -> None:
    flow = random_flow(0)
    x = torch.randn(8, 2, dtype=torch.float64)
    log_det = flow.to_latent(x)[1].detach()
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda v: flow.to_latent(v)[0], x[i])
        assert float(log_det[i]) == pytest.approx(float(torch.linalg.det(jac).abs().log()), abs=1e-10)
    assert log_det.abs().max() > 0.1


def test_inverse_and_density_integrates_to_one() -> None:
    flow = random_flow(1)
    x = torch.randn(16, 2, dtype=torch.float64)
    z, _ = flow.to_latent(x)
    assert torch.allclose(flow.from_latent(z), x, atol=1e-10)
    step = 0.08
    axis = torch.arange(-10.0, 10.0, step, dtype=torch.float64) + step / 2
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = float(flow.log_prob(grid).exp().sum() * step * step)
    assert mass == pytest.approx(1.0, abs=5e-3)


def test_identity_flow_loss_is_hand_computed() -> None:
    loss_fn = RLELoss()
    for module in loss_fn.flow.modules():
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.weight)
    pred, gt, sigma = torch.tensor([0.5, 0.2]), torch.tensor([0.3, 0.5]), torch.tensor([0.1, 0.2])
    ex, ey = 2.0, -1.5
    log_phi = -0.5 * (ex**2 + ey**2) - math.log(2 * math.pi)
    expected = sum(math.log(s) - log_phi + math.log(2 * s) + abs(e) for s, e in [(0.1, ex), (0.2, ey)])
    no_residual = RLELoss(residual=False)
    no_residual.load_state_dict(loss_fn.state_dict())
    with torch.no_grad():
        value, value_nf = float(loss_fn(pred, sigma, gt)), float(no_residual(pred, sigma, gt))
    assert value == pytest.approx(expected, rel=1e-5)
    expected_nf = sum(math.log(s) - log_phi for s in (0.1, 0.2))
    assert value_nf == pytest.approx(expected_nf, rel=1e-5)


def test_gradients_reach_prediction_sigma_and_flow() -> None:
    loss_fn = RLELoss()
    pred = torch.rand(5, 15, 2, requires_grad=True)
    sigma = (0.05 + torch.rand(5, 15, 2)).requires_grad_(True)
    loss = loss_fn(pred, sigma, torch.rand(5, 15, 2))
    assert loss.shape == (5, 15)
    loss.sum().backward()
    assert pred.grad.abs().sum() > 0 and sigma.grad.abs().sum() > 0
    assert loss_fn.flow.s_nets[0][0].weight.grad.abs().sum() > 0


def test_autocast_does_not_lower_the_precision() -> None:
    loss_fn = RLELoss()
    pred, sigma, gt = torch.rand(4, 15, 2), 0.05 + 0.2 * torch.rand(4, 15, 2), torch.rand(4, 15, 2)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = loss_fn(pred.bfloat16(), sigma, gt)
        reference = loss_fn(pred.bfloat16().float(), sigma, gt)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, reference)
