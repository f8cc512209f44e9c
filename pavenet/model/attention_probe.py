"""How much of the pose-aware attention falls on each clip frame (a diagnostic).

:class:`FrameAttentionProbe` wraps the ``sampling`` of every :class:`FrameDeformAttn` of a
network (pose decoder, joint decoder, VEPE's STDME / STPD) while it is active and records, for
each call, the share of every query's attention weight on each frame: the weights of a head sum
to 1 over frames x levels x points (one softmax), so the share of frame t is the weight summed
over levels and points, averaged over heads. A module with ``frame_weights="content"`` computes
the frames' shares in ``frame_share``, which the probe records instead.
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

    def _record(self, name: str, share: Tensor) -> None:
        """``share`` (B, T, Q, M) -> the list of ``name``, as (B, Q, T) averaged over heads."""
        self.shares[name].append(share.detach().float().mean(-1).permute(0, 2, 1).cpu())

    @staticmethod
    def _method(module: FrameDeformAttn) -> str:
        return "sampling" if module.content_query is None else "frame_share"

    def _wrap(self, name: str, module: FrameDeformAttn):
        method = self._method(module)
        original = getattr(module, method)

        def wrapped(*args, **kwargs):
            # sampling: (locations, weights (B, T, Q, M, L, P)); frame_share: (B, T, Q, M)
            result = original(*args, **kwargs)
            self._record(name, result[1].sum((-1, -2)) if method == "sampling" else result)
            return result
        return wrapped

    def __enter__(self) -> "FrameAttentionProbe":
        for name, module in self.modules.items():
            setattr(module, self._method(module), self._wrap(name, module))
        return self

    def __exit__(self, *exc: object) -> None:
        for module in self.modules.values():
            delattr(module, self._method(module))  # the instance attribute; the class method shows again
