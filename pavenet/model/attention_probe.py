"""How much of the pose-aware attention falls on each clip frame (a diagnostic).

:class:`FrameAttentionProbe` wraps the ``sampling`` of every :class:`FrameDeformAttn` of a
network (pose decoder, joint decoder, VEPE's STDME / STPD) while it is active and records, for
each call, the share of every query's attention weight on each frame: the weights of a head sum
to 1 over frames x levels x points (one softmax), so the share of frame t is the weight summed
over levels and points, averaged over heads.
"""
from __future__ import annotations

from torch import Tensor, nn

from .pose_attention import FrameDeformAttn


class FrameAttentionProbe:
    """``with FrameAttentionProbe(model) as probe: model(...)``; then ``probe.shares`` maps each
    attention module's name to the list of its calls' shares, each (B, Q, T) (detached, CPU)."""

    def __init__(self, model: nn.Module) -> None:
        self.modules = {name: m for name, m in model.named_modules() if isinstance(m, FrameDeformAttn)}
        self.shares: dict[str, list[Tensor]] = {name: [] for name in self.modules}

    def _wrap(self, name: str, module: FrameDeformAttn):
        original = module.sampling

        def sampling(*args, **kwargs):
            locations, weights = original(*args, **kwargs)  # weights (B, T, Q, M, L, P)
            share = weights.detach().float().sum((-1, -2)).mean(-1)  # (B, T, Q)
            self.shares[name].append(share.permute(0, 2, 1).cpu())
            return locations, weights
        return sampling

    def __enter__(self) -> "FrameAttentionProbe":
        for name, module in self.modules.items():
            module.sampling = self._wrap(name, module)
        return self

    def __exit__(self, *exc: object) -> None:
        for module in self.modules.values():
            del module.sampling  # the instance attribute; the class method shows again
