"""Residual log-likelihood estimation (RLE) keypoint loss with a RealNVP flow.

RLE (Li et al., ICCV 2021; used by PETR and PAVE-Net) models the density of the normalised
residual ``e = (pred - gt) / sigma`` as a learned flow density ``phi(e)`` times a fixed residual
term. Per coordinate ``c`` of a joint the loss is ``log(sigma_c) - log phi(e) + Q_c`` where
``log phi(e)`` is the flow's 2-D log-density of the joint's residual (broadcast over both
coordinates, as the published code does) and ``Q_c`` the residual term:

* ``variant="released"`` (PAVE-Net's code): ``Q_c = log(sigma_c sqrt(2 pi)) + |e_c| / sqrt(2)``,
  flow base N((0.5, 0.5), I) (the released prior);
* ``variant="pavenet"``: ``Q_c = log(2 sigma_c) + |e_c|`` (a Laplace density), base N(0, I).

The flow is a RealNVP of 3 coupling pairs whose scale and translation nets are 2-64-64-2 MLPs
(scale nets end in tanh).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_LOG_2PI = math.log(2.0 * math.pi)


def _mlp(hidden: int, tanh: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Linear(2, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, 2)
    ]
    if tanh:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class RealNVP(nn.Module):
    """2-D RealNVP: alternating affine couplings, each transforming one coordinate given the other."""

    def __init__(self, num_pairs: int = 3, hidden: int = 64, init_gain: float = 0.01,
                 prior_mean: float = 0.0) -> None:
        super().__init__()
        self.prior_mean = prior_mean
        masks = torch.tensor([[0.0, 1.0], [1.0, 0.0]] * num_pairs)
        self.register_buffer("masks", masks, persistent=False)
        self.s_nets = nn.ModuleList(_mlp(hidden, tanh=True) for _ in range(len(masks)))
        self.t_nets = nn.ModuleList(_mlp(hidden, tanh=False) for _ in range(len(masks)))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight, gain=init_gain)
                nn.init.zeros_(module.bias)

    def to_latent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map data ``x`` (..., 2) to the base space.

        Returns:
            ``z`` (..., 2) and ``log |det dz/dx|`` (...).
        """
        z = x
        log_det = x.new_zeros(x.shape[:-1])
        for i in reversed(range(len(self.masks))):
            mask = self.masks[i].to(x.dtype)
            kept = z * mask
            s = self.s_nets[i](kept) * (1 - mask)
            t = self.t_nets[i](kept) * (1 - mask)
            z = kept + (1 - mask) * (z - t) * torch.exp(-s)
            log_det = log_det - s.sum(-1)
        return z, log_det

    def from_latent(self, z: Tensor) -> Tensor:
        """Inverse of :meth:`to_latent` (sampling direction)."""
        x = z
        for i in range(len(self.masks)):
            mask = self.masks[i].to(z.dtype)
            kept = x * mask
            s = self.s_nets[i](kept) * (1 - mask)
            t = self.t_nets[i](kept) * (1 - mask)
            x = kept + (1 - mask) * (x * torch.exp(s) + t)
        return x

    def log_prob(self, x: Tensor) -> Tensor:
        """(...) log-density of ``x`` (..., 2) under the flow."""
        z, log_det = self.to_latent(x)
        base = -0.5 * (z - self.prior_mean).pow(2).sum(-1) - _LOG_2PI
        return base + log_det


VARIANTS = ("pavenet", "released")


class RLELoss(nn.Module):
    """Per-joint RLE negative log-likelihood (see the module docstring)."""

    def __init__(self, num_pairs: int = 3, hidden: int = 64, residual: bool = True,
                 variant: str = "pavenet") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"RLE variant must be one of {VARIANTS}, got {variant!r}")
        self.flow = RealNVP(num_pairs, hidden, prior_mean=0.5 if variant == "released" else 0.0)
        self.residual, self.variant = residual, variant

    def residual_term(self, sigma: Tensor, error: Tensor) -> Tensor:
        """The per-coordinate residual term ``Q_c`` of the variant."""
        if self.variant == "released":
            return torch.log(sigma * math.sqrt(2.0 * math.pi)) + error.abs() / math.sqrt(2.0)
        return torch.log(2.0 * sigma) + error.abs()

    def forward(self, pred: Tensor, sigma: Tensor, gt: Tensor) -> Tensor:
        """Loss of every joint.

        Args:
            pred: (..., 2) predicted keypoints.
            sigma: (..., 2) positive predicted scales.
            gt: (..., 2) ground-truth keypoints.

        Returns:
            (...) the loss summed over the two coordinates, computed in float32 (autocast off).
        """
        with torch.autocast(pred.device.type, enabled=False):
            sigma = sigma.float() + 1e-9
            error = (pred.float() - gt.float()) / sigma
            log_phi = self.flow.log_prob(error)
            loss = torch.log(sigma) - log_phi[..., None]
            if self.residual:
                loss = loss + self.residual_term(sigma, error)
            return loss.sum(-1)
