"""Clip-level set criterion: one named method per loss, a weight dict, one auxiliary loop.

Every output dict (the top level, each ``aux_outputs`` entry, ``enc_outputs``) goes through the
same losses. Dicts with ``logits`` get their own Hungarian matching; joint-decoder entries (no
``logits``) reuse the matching of the top level's logits restricted to their ``query_mask``.
When the top level's ``logits`` equal an ``aux_outputs`` entry's (PAVE-Net: the last
pose-decoder layer), that entry's matching is the top level's, restricted to the refined queries
(``kept_index``), and the class loss is counted once, as the released code does. The encoder
proposals are single-frame poses expanded over the clip, so they are always matched and
supervised on the key frame only. Denoising queries (``dn_outputs``, suffix ``_dn{i}``) are not
matched: each reconstructs the track in ``dn_track``, with the same losses and weights, positive
in the class loss when the track is supervised in the clip.

Supervision of a matched query ``q`` <-> track ``g`` (see :func:`pavenet.model.matcher.supervision`):
keypoint, RLE and OKS losses on the annotated joints of the supervised frames where ``g`` is
present; the visibility loss on every joint of every supervised frame (target ``visible[g, t, j]``,
so 0 where the track is absent). Unmatched queries get no keypoint or visibility loss: their
class target (no person) already says that they show nobody. Joints in ignore regions arrive
with ``visible=False`` and so are left out of the keypoint losses.

Normalisers (tracks, joints, frames, triplets) are summed over ranks and divided by the world
size when ``torch.distributed`` is initialised, so the loss does not depend on how a batch is
split across processes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from pavenet.config import Config
from pavenet.model.classification import sigmoid_focal_loss, varifocal_loss
from pavenet.model.heatmap import centernet_focal_loss, heatmap_targets
from pavenet.model.matcher import HungarianMatcher, Indices, build_matcher, matcher_sigmas, supervision
from pavenet.model.oks import oks, oks_sigmas
from pavenet.model.rle import RLELoss

#: the keypoint-loss stages that get their own RLE flow with ``rle="released"``
STAGES = ("enc", "dec", "joint")


def reduced_count(value: Tensor) -> Tensor:
    """A normaliser: summed over ranks, divided by the world size, at least 1."""
    value = value.detach().float()
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return value.clamp(min=1.0)


@dataclass
class Matched:
    """Ground truth gathered for the N matched (clip, query) pairs of one output dict."""

    batch: Tensor
    query: Tensor
    keypoints: Tensor
    joints: Tensor
    areas: Tensor
    frames: Tensor
    visible: Tensor
    keys: list[tuple[int, int]]
    ignored: Tensor  # (N, T, J) joints inside ignore regions: left out of the visibility loss


class SetCriterion(nn.Module):
    """Losses of the set prediction (see the module docstring).

    Args:
        matcher: the Hungarian matcher (its mode also selects the supervised frames).
        weights: loss name -> weight; names ``loss_class``, ``loss_kpt``, ``loss_oks``,
            ``loss_vis``, ``loss_consistency`` (per output dict) and ``loss_heatmap`` (the
            auxiliary heatmaps in ``outputs["heatmap"]``, :mod:`pavenet.model.heatmap`). Terms
            with weight 0 are not computed.
        keypoint_loss: ``"rle"`` or ``"l1"``, the loss behind ``loss_kpt``.
        focal_alpha, focal_gamma: focal classification loss parameters.
        consistency_margin: triplet margin of the instance consistency loss (cosine distance).
        sigmas: per-joint OKS sigmas (default: the 15 PoseTrack sigmas).
        enc_one_to_many: with k > 1 each track supervises its k cheapest encoder proposals
            (:meth:`HungarianMatcher.match_many`) instead of one.
        class_target: ``"binary"`` (focal loss, target 1 for matched queries; published) or
            ``"oks"`` (varifocal loss towards the detached OKS of the matched prediction, so the
            score ranks poses by quality; ``focal_alpha`` then weighs the negatives).
        heatmap_sigma: width of the heatmap targets, in cells.
        rle: ``"pavenet"`` (one shared flow, per-joint normaliser) or ``"released"`` (the
            released residual and prior, one flow per stage: encoder proposals, pose decoder,
            joint decoder; normalised per coordinate), see :mod:`pavenet.model.rle`.
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        weights: dict[str, float],
        keypoint_loss: str = "rle",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        consistency_margin: float = 0.3,
        sigmas: Optional[Sequence[float]] = None,
        enc_one_to_many: int = 1,
        class_target: str = "binary",
        heatmap_sigma: float = 1.0,
        rle: str = "pavenet",
    ) -> None:
        super().__init__()
        if keypoint_loss not in ("rle", "l1"):
            raise ValueError(f"keypoint_loss must be 'rle' or 'l1', got {keypoint_loss!r}")
        if class_target not in ("binary", "oks"):
            raise ValueError(f"class_target must be 'binary' or 'oks', got {class_target!r}")
        if heatmap_sigma <= 0:
            raise ValueError(f"heatmap_sigma must be > 0, got {heatmap_sigma}")
        unknown = set(weights) - {"loss_class", "loss_kpt", "loss_oks", "loss_vis", "loss_consistency",
                                  "loss_heatmap"}
        if unknown:
            raise ValueError(f"unknown loss names in the weight dict: {sorted(unknown)}")
        self.matcher = matcher
        self.weights = dict(weights)
        self.keypoint_loss = keypoint_loss
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.margin = consistency_margin
        self.sigmas = None if sigmas is None else torch.as_tensor(sigmas, dtype=torch.float32)
        self.rle_variant = rle
        if keypoint_loss != "rle":
            self.rle = None
        elif rle == "released":
            self.rle = nn.ModuleDict({stage: RLELoss(variant="released") for stage in STAGES})
        else:
            self.rle = RLELoss(variant=rle)
        self.enc_one_to_many = enc_one_to_many
        self.class_target = class_target
        self.heatmap_sigma = heatmap_sigma

    def _sigmas(self, like: Tensor) -> Tensor:
        return oks_sigmas(like.device, like.dtype, self.sigmas)

    def gather(self, indices: Indices, targets: list[dict], keyframe_only: bool, device: torch.device) -> Matched:
        """Collect the supervision of the matched pairs, in batch order."""
        parts: dict[str, list[Tensor]] = {
            k: [] for k in ("batch", "query", "kpt", "joints", "areas", "frames", "vis", "ign")}
        keys: list[tuple[int, int]] = []
        for b, ((q, g), target) in enumerate(zip(indices, targets)):
            sup = supervision(target, keyframe_only)
            parts["batch"].append(torch.full_like(q, b))
            parts["query"].append(q)
            parts["kpt"].append(target["keypoints"][g])
            parts["joints"].append(sup.joints[g])
            parts["areas"].append(target["areas"][g])
            parts["frames"].append(sup.frames[None].expand(len(g), -1))
            parts["vis"].append(target["visible"].bool()[g] & target["present"].bool()[g][..., None])
            ignored = target.get("ignored")
            parts["ign"].append(ignored.bool()[g] if ignored is not None else torch.zeros_like(parts["vis"][-1]))
            keys += [(int(target["video_id"]), int(t)) for t in target["track_ids"][g]]
        cat = {k: torch.cat(v).to(device) for k, v in parts.items()}
        return Matched(cat["batch"], cat["query"], cat["kpt"].float(), cat["joints"], cat["areas"].float(),
                       cat["frames"], cat["vis"], keys, cat["ign"])

    def loss_class(self, out: dict, m: Matched, num_tracks: Tensor, valid: Optional[Tensor]) -> Tensor:
        """Classification loss over the valid queries / number of tracks (see ``class_target``)."""
        logits = out["logits"].float()
        target = torch.zeros_like(logits)
        target[m.batch, m.query] = 1.0
        if self.class_target == "oks":
            quality = torch.zeros_like(logits)
            quality[m.batch, m.query] = self.matched_oks(out, m).detach()
            loss = varifocal_loss(logits, quality, target.bool(), self.focal_alpha, self.focal_gamma)
        else:
            loss = sigmoid_focal_loss(logits, target, self.focal_alpha, self.focal_gamma)
        if valid is not None:
            loss = loss * valid.to(loss.dtype)
        return loss.sum() / num_tracks

    def matched_oks(self, out: dict, m: Matched) -> Tensor:
        """(N,) OKS of each matched prediction, averaged over its frames with an annotated joint."""
        pred = out["keypoints"][m.batch, m.query].float()
        sim = oks(pred, m.keypoints, m.joints, m.areas, self._sigmas(pred))
        frames = m.joints.any(-1).to(sim.dtype)
        return (sim * frames).sum(-1) / frames.sum(-1).clamp(min=1.0)

    def loss_keypoints_l1(self, out: dict, m: Matched) -> Tensor:
        """Mean absolute coordinate error over the supervised annotated joints."""
        pred = out["keypoints"][m.batch, m.query].float()
        weight = m.joints.to(pred.dtype)
        total = ((pred - m.keypoints).abs().sum(-1) * weight).sum()
        return total / reduced_count(2.0 * weight.sum())

    def loss_keypoints_rle(self, out: dict, m: Matched, stage: str = "dec") -> Tensor:
        """RLE negative log-likelihood averaged over the supervised annotated joints (over their
        coordinates with the released form), with the flow of ``stage`` (enc, dec, joint)."""
        pred = out["keypoints"][m.batch, m.query]
        sigma = out["sigma"][m.batch, m.query]
        weight = m.joints.to(torch.float32)
        released = self.rle_variant == "released"
        rle = self.rle[stage] if released else self.rle
        loss = rle(pred[m.joints], sigma[m.joints], m.keypoints[m.joints])
        return loss.sum() / reduced_count(weight.sum() * (2.0 if released else 1.0))

    def loss_oks(self, out: dict, m: Matched) -> Tensor:
        """1 - OKS averaged over the (pair, frame) instances with an annotated joint."""
        pred = out["keypoints"][m.batch, m.query].float()
        sim = oks(pred, m.keypoints, m.joints, m.areas, self._sigmas(pred))
        frames = m.joints.any(-1).to(sim.dtype)
        return ((1.0 - sim) * frames).sum() / reduced_count(frames.sum())

    def loss_visibility(self, out: dict, m: Matched) -> Tensor:
        """Per-frame per-joint BCE on the supervised frames of matched queries."""
        logits = out["visibility"][m.batch, m.query].float()
        weight = (m.frames[..., None].expand_as(logits) & ~m.ignored).to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, m.visible.to(logits.dtype), reduction="none")
        return (bce * weight).sum() / reduced_count(weight.sum())

    def loss_consistency(self, out: dict, m: Matched) -> Tensor:
        """Triplet loss with cosine distance over all (anchor, positive, negative) triplets.

        Anchor and positive are the same (video_id, track_id) matched in two different clips of
        the batch; the negative is any matched query of another person.
        """
        emb = F.normalize(out["embedding"][m.batch, m.query].float(), dim=-1)
        codes = {key: i for i, key in enumerate(dict.fromkeys(m.keys))}
        ident = torch.tensor([codes[k] for k in m.keys], dtype=torch.int64, device=emb.device)
        same = ident[:, None] == ident[None]
        positive = same & (m.batch[:, None] != m.batch[None])
        dist_ = 1.0 - emb @ emb.T
        triplets = positive[:, :, None] & ~same[:, None, :]
        hinge = F.relu(dist_[:, :, None] - dist_[:, None, :] + self.margin)
        count = triplets.sum().float()
        return (hinge * triplets.to(hinge.dtype)).sum() / reduced_count(count)

    def loss_heatmap(self, heat: dict, targets: list[dict]) -> Tensor:
        """Focal loss of the auxiliary heatmaps over the labelled frames / annotated joints."""
        logits = heat["logits"]
        shape = tuple(logits.shape[-2:])
        total, count = logits.new_zeros((), dtype=torch.float32), 0
        for b, target in enumerate(targets):
            sup = supervision(target, False)
            ratios = heat["valid_ratios"][b].float()
            joints = sup.joints.to(logits.device)
            goal = heatmap_targets(target["keypoints"].float().to(logits.device), joints, ratios, shape,
                                   self.heatmap_sigma)
            weight = ~heat["padding"][b][:, None] & sup.frames.to(logits.device)[:, None, None, None]
            total = total + centernet_focal_loss(logits[b], goal, weight.to(torch.float32))
            count += int(joints.sum())
        return total / reduced_count(torch.tensor(float(count), device=logits.device))

    def layer_losses(self, out: dict, m: Matched, num_tracks: Tensor, valid: Optional[Tensor],
                     stage: str = "dec", class_loss: bool = True) -> dict[str, Tensor]:
        """Unweighted losses of one output dict (only those with a non-zero weight and inputs)."""
        losses: dict[str, Tensor] = {}
        w = self.weights
        if w.get("loss_class", 0) and "logits" in out and class_loss:
            losses["loss_class"] = self.loss_class(out, m, num_tracks, valid)
        if w.get("loss_kpt", 0):
            rle = self.keypoint_loss == "rle"
            losses["loss_kpt"] = self.loss_keypoints_rle(out, m, stage) if rle else self.loss_keypoints_l1(out, m)
        if w.get("loss_oks", 0):
            losses["loss_oks"] = self.loss_oks(out, m)
        if w.get("loss_vis", 0) and "visibility" in out:
            losses["loss_vis"] = self.loss_visibility(out, m)
        if w.get("loss_consistency", 0) and "embedding" in out:
            losses["loss_consistency"] = self.loss_consistency(out, m)
        return losses

    def denoising_losses(self, outputs: dict, targets: list[dict], keyframe_only: bool,
                         device: torch.device) -> dict[str, Tensor]:
        """Weighted losses of every ``dn_outputs`` entry (suffix ``_dn{i}``) against the known tracks;
        denoising queries of tracks not supervised in the clip get no loss."""
        track, valid = outputs["dn_track"], outputs["dn_valid"].clone()
        indices: Indices = []
        for b, target in enumerate(targets):
            active = supervision(target, keyframe_only).active.to(track.device)
            query = valid[b].nonzero().squeeze(1)
            query = query[active[track[b, query]]]
            valid[b] = torch.zeros_like(valid[b]).index_fill_(0, query, True)
            indices.append((query.cpu(), track[b, query].cpu()))
        count = reduced_count(valid.sum())
        m = self.gather(indices, targets, keyframe_only, device)
        result = {}
        for i, out in enumerate(outputs["dn_outputs"]):
            for name, value in self.layer_losses(out, m, count, valid).items():
                result[f"{name}_dn{i}"] = self.weights[name] * value
        return result

    def _supervise(self, result: dict, suffix: str, out: dict, indices: Indices, targets: list[dict],
                   kf: bool, stage: str, device: torch.device, class_loss: bool = True) -> None:
        """Add the weighted losses of one output dict under ``suffix``, given its matching."""
        valid = out.get("query_mask", out.get("token_mask"))
        m = self.gather(indices, targets, kf, device)
        losses = self.layer_losses(out, m, _num_tracks(targets, kf, device), valid, stage, class_loss)
        for name, value in losses.items():
            result[name + suffix] = self.weights[name] * value

    def _match_and_supervise(self, result: dict, suffix: str, out: dict, targets: list[dict], kf: bool,
                             stage: str, device: torch.device) -> Indices:
        """Match one output dict that has ``logits``, add its losses, return the matching."""
        valid = out.get("query_mask", out.get("token_mask"))
        if suffix == "_enc" and self.enc_one_to_many > 1:
            indices = self.matcher.match_many(out, targets, self.enc_one_to_many, valid, kf)
        else:
            indices = self.matcher(out, targets, query_mask=valid, keyframe_only=kf)
        self._supervise(result, suffix, out, indices, targets, kf, stage, device)
        return indices

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        """Weighted losses of every output dict (suffix ``_i`` for ``aux_outputs[i]``, ``_enc``
        for ``enc_outputs``, none for the top level) and their total under ``"loss"``.

        When the top level's ``logits`` equal those of an ``aux_outputs`` entry (PAVE-Net: the
        last pose-decoder layer), each term is counted once: the top level and the joint-decoder
        entries are supervised with that layer's matching, on the queries the joint decoder
        refined (``kept_index`` / ``query_mask``), without a second class loss.
        """
        if "logits" not in outputs:
            raise ValueError("criterion: the top-level output has no 'logits'")
        device = outputs["keypoints"].device
        kf = self.matcher.mode == "keyframe"
        result: dict[str, Tensor] = {}
        aux = outputs.get("aux_outputs", [])
        matched = {i: self._match_and_supervise(result, f"_{i}", out, targets, kf, "dec", device)
                   for i, out in enumerate(aux) if "logits" in out}
        if "enc_outputs" in outputs:
            self._match_and_supervise(result, "_enc", outputs["enc_outputs"], targets, True, "enc", device)
        shared = next((i for i in reversed(list(matched)) if _same(aux[i]["logits"], outputs["logits"])), None)
        if shared is None:
            top = self._match_and_supervise(result, "", outputs, targets, kf, "dec", device)
        else:
            top = matched[shared]
            self._supervise(result, "", outputs, _restrict(top, _kept_mask(outputs)), targets, kf,
                            "joint", device, class_loss=False)
        for i, out in enumerate(aux):
            if "logits" not in out:
                self._supervise(result, f"_{i}", out, _restrict(top, out.get("query_mask")), targets, kf,
                                "joint", device)
        if "dn_outputs" in outputs:
            result.update(self.denoising_losses(outputs, targets, kf, device))
        if self.weights.get("loss_heatmap", 0):
            if "heatmap" not in outputs:
                raise ValueError("criterion: loss.weight_heatmap > 0 but the outputs have no 'heatmap' "
                                 "(model.heatmap_head off, or the model is in eval mode)")
            result["loss_heatmap"] = self.weights["loss_heatmap"] * self.loss_heatmap(outputs["heatmap"], targets)
        result["loss"] = torch.stack(list(result.values())).sum() if result else outputs["keypoints"].sum() * 0.0
        return result


def _num_tracks(targets: list[dict], keyframe_only: bool, device: torch.device) -> Tensor:
    """Normaliser of the classification loss: the active tracks of the batch."""
    count = sum(int(supervision(t, keyframe_only).active.sum()) for t in targets)
    return reduced_count(torch.tensor(float(count), device=device))


def _same(a: Tensor, b: Tensor) -> bool:
    """Whether two outputs hold the same values (DDP hands the module's outputs back as new
    tensor objects, so identity cannot tell that the top level repeats an aux layer)."""
    return a.shape == b.shape and torch.equal(a.detach(), b.detach())


def _kept_mask(outputs: dict) -> Optional[Tensor]:
    """(B, Q) bool of the queries in ``kept_index`` (those the joint decoder refined)."""
    kept = outputs.get("kept_index")
    if kept is None:
        return None
    mask = torch.zeros(outputs["logits"].shape, dtype=torch.bool, device=kept.device)
    return mask.scatter(1, kept, True)


def _restrict(indices: Indices, query_mask: Optional[Tensor]) -> Indices:
    """Keep the matched pairs whose query is in ``query_mask`` (B, Q)."""
    if query_mask is None:
        return indices
    kept = []
    for b, (q, g) in enumerate(indices):
        keep = query_mask[b].cpu()[q]
        kept.append((q[keep], g[keep]))
    return kept


def build_criterion(cfg: Config) -> SetCriterion:
    """The criterion of a :class:`pavenet.config.Config` (loss and matcher sections)."""
    loss = cfg.loss
    weights = {
        "loss_class": loss.weight_class,
        "loss_kpt": loss.weight_keypoint,
        "loss_oks": loss.weight_oks,
        "loss_vis": loss.weight_visibility,
        "loss_consistency": loss.weight_consistency,
        "loss_heatmap": loss.weight_heatmap,
    }
    matcher = build_matcher(cfg.matcher, loss.focal_alpha, loss.focal_gamma)
    return SetCriterion(matcher, weights, loss.keypoint_loss, loss.focal_alpha, loss.focal_gamma,
                        loss.consistency_margin, sigmas=matcher_sigmas(cfg.matcher),
                        enc_one_to_many=loss.enc_one_to_many, class_target=loss.class_target,
                        heatmap_sigma=loss.heatmap_sigma, rle=loss.rle)
