"""Post-processor: model output -> per-frame people in original-image pixels.

No NMS: the set prediction is one-to-one, so the ``top_k`` queries by score are kept (those
below ``score_threshold`` dropped). The same queries are reported in every frame of the clip, so
an entry is one person through the clip.

Keypoints are normalised by the unpadded resized input, and the resize scales each axis by
``resized / original``, so ``x * W_orig, y * H_orig`` is exact in original pixels; padding does
not enter.

Per-joint score = instance score x joint confidence, where the joint confidence is
``clamp(1 - mean(sigma), 0, 1)`` (the published RLE/PETR confidence from the predicted scale),
multiplied by ``sigmoid(visibility)`` when the model predicts per-frame visibility, so that a
person absent from a frame gets low joint scores there.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pavenet.config import Config


class PostProcessor(nn.Module):
    """Top-k selection and conversion to original-image pixels (see the module docstring)."""

    def __init__(self, top_k: int = 20, score_threshold: float = 0.0) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k
        self.score_threshold = score_threshold

    @staticmethod
    def joint_confidence(outputs: dict) -> Tensor:
        """(B, Q, T, J) joint confidence in [0, 1] from ``sigma`` and, if present, ``visibility``."""
        conf = (1.0 - outputs["sigma"].float().mean(-1)).clamp(0.0, 1.0)
        if "visibility" in outputs:
            conf = conf * outputs["visibility"].float().sigmoid()
        return conf

    @torch.no_grad()
    def forward(self, outputs: dict, orig_sizes: Tensor) -> list[list[dict[str, Tensor]]]:
        """Convert a batch.

        Args:
            outputs: the model's output dict (docs/interfaces.md).
            orig_sizes: (B, 2) original image (h, w) per clip.

        Returns:
            B lists of T dicts with ``keypoints`` (K, J, 3) (x, y in pixels, joint score),
            ``scores`` (K,), ``query_index`` (K,) int64 and ``embedding`` (K, E).
        """
        keypoints = outputs["keypoints"].float()
        B, Q, T = keypoints.shape[:3]
        if orig_sizes.shape != (B, 2):
            raise ValueError(f"orig_sizes must have shape ({B}, 2), got {tuple(orig_sizes.shape)}")
        scores = outputs["logits"].float().sigmoid()
        conf = self.joint_confidence(outputs)
        scale = orig_sizes.to(keypoints.device, torch.float32).flip(-1)
        results = []
        for b in range(B):
            top, index = scores[b].topk(min(self.top_k, Q))
            keep = top >= self.score_threshold
            top, index = top[keep], index[keep]
            pixels = keypoints[b, index] * scale[b]
            joint_scores = top[:, None, None] * conf[b, index]
            embedding = outputs["embedding"][b, index]
            results.append([
                {
                    "keypoints": torch.cat([pixels[:, t], joint_scores[:, t, :, None]], dim=-1),
                    "scores": top,
                    "query_index": index,
                    "embedding": embedding,
                }
                for t in range(T)
            ])
        return results


def build_postprocessor(cfg: Config) -> PostProcessor:
    """The post-processor of a :class:`pavenet.config.Config`."""
    return PostProcessor(cfg.postprocess.top_k, cfg.postprocess.score_threshold)
