"""Post-processor: model output -> per-frame people in original-image pixels.

Two modes (``postprocess.mode``):

* ``nms_free`` (the papers' claim): the set prediction is one-to-one, so the ``top_k`` queries
  by score are kept (those below ``score_threshold`` dropped). Per-joint score = instance score
  x joint confidence, where the joint confidence is ``clamp(1 - mean(sigma), 0, 1)`` (the
  RLE/PETR confidence from the predicted scale), multiplied by ``sigmoid(visibility)`` when the
  model predicts per-frame visibility, so that a person absent from a frame gets low joint
  scores there.
* ``official`` (the released test-time rule, ``_get_bboxes_single`` of the published head): the
  ``top_k`` queries by score; coordinates clamped to the image; per-joint
  ``p = 0.7 (1 - exp(-0.2 / sigma_x)) (1 - exp(-0.2 / sigma_y))``, joint score = instance score
  x p, coordinates reweighted as ``x p^5 / (p^5 + 1e-10)``; then OKS-NMS at ``nms_oks`` with
  the released sigmas (:data:`pavenet.data.joints.RELEASED_OKS_SIGMAS`) on the key frame
  (the released code reports the key frame only). ``score_threshold`` still applies (the
  published configs set it to 0, as released).

In both modes the same queries are reported in every frame of the clip, in order of decreasing
score, so an entry is one person through the clip.

Keypoints are normalised by the unpadded resized input, and the resize scales each axis by
``resized / original``, so ``x * W_orig, y * H_orig`` is exact in original pixels; padding does
not enter.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pavenet.config import Config
from pavenet.data.joints import RELEASED_OKS_SIGMAS
from pavenet.model.oks import keypoint_similarity

MODES = ("nms_free", "official")


def released_joint_confidence(sigma: Tensor) -> Tensor:
    """The released joint confidence p from sigma (..., J, 2) -> (..., J)."""
    p = 1.0 - torch.exp(-0.2 / sigma)
    return 0.7 * p[..., 0] * p[..., 1]


def reweight_coordinates(keypoints: Tensor, p: Tensor) -> Tensor:
    """The released ``x p^5 / (p^5 + 1e-10)``: keypoints (..., J, 2), p (..., J)."""
    w = p[..., None] ** 5
    return keypoints * w / (w + 1e-10)


def pose_oks_matrix(poses: Tensor, sigmas: Tensor) -> Tensor:
    """(K, K) OKS between poses (K, J, 2) in pixels, the released NMS's definition.

    Area = the box around each pose's joints; ``e = d^2 / (2 sigma)^2 / ((a_i + a_k) / 2 + eps) / 2``
    and OKS = mean over the J joints of ``exp(-e)`` (every joint counts).
    """
    poses = poses.double()
    size = poses.amax(dim=1) - poses.amin(dim=1)
    area = size[:, 0] * size[:, 1]
    pair_area = (area[:, None] + area[None]) / 2 + torch.finfo(torch.float64).eps
    return keypoint_similarity(poses[:, None], poses[None], pair_area, sigmas.double()).mean(-1)


def oks_nms(poses: Tensor, scores: Tensor, threshold: float, sigmas: Tensor) -> Tensor:
    """Greedy OKS-NMS: indices of the kept poses in order of decreasing score.

    A pose is suppressed when its OKS with a kept, higher-scoring pose exceeds ``threshold``.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    over = (pose_oks_matrix(poses[order], sigmas) > threshold).cpu()  # one device read
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


class PostProcessor(nn.Module):
    """Top-k selection and conversion to original-image pixels (see the module docstring)."""

    def __init__(self, top_k: int = 20, score_threshold: float = 0.0, mode: str = "nms_free",
                 nms_oks: float = 0.45) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if mode not in MODES:
            raise ValueError(f"postprocess.mode must be one of {MODES}, got {mode!r}")
        self.top_k, self.score_threshold = top_k, score_threshold
        self.mode, self.nms_oks = mode, nms_oks

    @staticmethod
    def joint_confidence(outputs: dict) -> Tensor:
        """(B, Q, T, J) joint confidence in [0, 1] from ``sigma`` and, if present, ``visibility``."""
        conf = (1.0 - outputs["sigma"].float().mean(-1)).clamp(0.0, 1.0)
        if "visibility" in outputs:
            conf = conf * outputs["visibility"].float().sigmoid()
        return conf

    def _official(self, keypoints: Tensor, sigma: Tensor, scores: Tensor,
                  size: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Released rule on one clip's top-k: (pixels (K, T, J, 2), joint scores (K, T, J),
        order (K') of the people kept by the key frame's OKS-NMS)."""
        pixels = torch.minimum((keypoints * size).clamp(min=0.0), size)
        p = released_joint_confidence(sigma)
        pixels = reweight_coordinates(pixels, p)
        key = keypoints.shape[1] // 2
        sigmas = torch.as_tensor(RELEASED_OKS_SIGMAS, device=keypoints.device)
        keep = oks_nms(pixels[:, key], scores, self.nms_oks, sigmas)
        return pixels, scores[:, None, None] * p, keep

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
        scale = orig_sizes.to(keypoints.device, torch.float32).flip(-1)
        conf = self.joint_confidence(outputs) if self.mode == "nms_free" else None
        results = []
        for b in range(B):
            top, index = scores[b].topk(min(self.top_k, Q))
            keep = top >= self.score_threshold
            top, index = top[keep], index[keep]
            if self.mode == "official":
                pixels, joint_scores, order = self._official(
                    keypoints[b, index], outputs["sigma"][b, index].float(), top, scale[b])
                pixels, joint_scores, top, index = pixels[order], joint_scores[order], top[order], index[order]
            else:
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


def build_postprocessor(cfg: Config, score_threshold: float | None = None) -> PostProcessor:
    """The post-processor of a :class:`pavenet.config.Config` (``score_threshold`` overrides
    the config's)."""
    p = cfg.postprocess
    threshold = p.score_threshold if score_threshold is None else score_threshold
    return PostProcessor(p.top_k, threshold, p.mode, p.nms_oks)
