"""Does the temporal model use the neighbouring frames? (issue 24's diagnostics)

:func:`attention_to_neighbours`: for every labelled key frame of a split, the clip around it is
decoded with a :class:`pavenet.model.attention_probe.FrameAttentionProbe`; for the queries the
network keeps (``kept_index``) the share of attention on the non-key frames is averaged per
attention layer, separately for degraded and clean key frames (the temporal synthetic split
marks its degraded frames). :func:`format_attention` prints it as a table;
:func:`pavenet.eval.frame_subsets.ap_by_degradation` gives the per-joint AP on the same two
groups of frames from a prediction folder, and :func:`ap_key_frame_only` that AP when every clip
is decoded from its key frame alone (``pavenet test --temporal-report`` runs all three): a
model that uses its neighbours loses AP without them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pavenet.config import Config
from pavenet.data.build import labelled_key_clips, load_split
from pavenet.engine.evaluate import predict_split
from pavenet.eval.frame_subsets import ap_by_degradation, degradation_subsets
from pavenet.infer.estimator import PoseEstimator
from pavenet.model.attention_probe import FrameAttentionProbe
from pavenet.model.key_frame_only import KeyFrameOnly
from pavenet.runtime.progress import progress_bar


def _neighbour_share(probe: FrameAttentionProbe, kept: torch.Tensor, num_queries: int,
                     key: int) -> dict[str, float]:
    """Per attention module, the mean share of attention off the key frame: of the kept queries
    where a module reads all ``num_queries`` person queries (pose decoder), of every row where it
    reads only the kept people's (joint decoder: their joints)."""
    out = {}
    for name, calls in probe.shares.items():
        share = calls[-1][0]  # the last call, clip 0: (rows, T)
        rows = share[kept] if share.shape[0] == num_queries else share
        out[name] = float(1.0 - rows[:, key].mean())
    return out


def attention_to_neighbours(est: PoseEstimator, cfg: Config, split: str = "val",
                            subsets: dict[str, set[int]] | None = None, max_clips: int = 0,
                            progress: bool = False) -> dict[str, dict[str, float]]:
    """{"degraded" / "clean": {attention module: mean share on the non-key frames}} over the
    labelled key frames of ``split`` (the first ``max_clips`` when > 0); ``subsets``: the
    split's :func:`degradation_subsets` when already read."""
    if subsets is None:
        subsets = degradation_subsets(Path(cfg.data.root) / "annotations" / split)
    sums: dict[str, dict[str, list[float]]] = {"degraded": {}, "clean": {}}
    model, key = est.model, cfg.model.num_frames // 2
    clips = progress_bar(labelled_key_clips(cfg.data, split, cfg.model.num_frames, max_clips),
                         desc="attention", unit="clip", disable=not progress, leave=False)
    for frame, frames in clips:
        images = est.preprocess(frames)[None]
        mask = torch.zeros(1, *images.shape[-2:], dtype=torch.bool, device=images.device)
        with torch.no_grad(), FrameAttentionProbe(model) as probe:
            outputs = model(images, mask)
        group = "degraded" if frame.image_id in subsets["degraded"] else "clean"
        kept = outputs["kept_index"][0].cpu()
        for name, value in _neighbour_share(probe, kept, cfg.model.num_queries, key).items():
            sums[group].setdefault(name, []).append(value)
    return {group: {name: float(np.mean(v)) for name, v in layers.items()} for group, layers in sums.items()}


def ap_key_frame_only(est: PoseEstimator, cfg: Config, split: str, pred_dir: Path,
                      subsets: dict[str, set[int]] | None = None, batch_size: int = 1,
                      progress: bool = False) -> dict[str, dict]:
    """:func:`ap_by_degradation` of ``split`` predicted (into ``pred_dir``) with every clip
    decoded from its key frame alone (:class:`KeyFrameOnly`): the neighbours' contribution is the
    AP the model loses this way."""
    with KeyFrameOnly(est.model):
        predict_split(est, load_split(cfg.data, split), pred_dir, batch_size, progress=progress)
    return ap_by_degradation(Path(cfg.data.root) / "annotations" / split, pred_dir, subsets)


def format_attention(report: dict[str, dict[str, float]]) -> str:
    """One line per attention module: the share on the non-key frames for degraded / clean key frames."""
    names = list(report["clean"])
    width = max(len(n) for n in names + ["attention module"])
    lines = [f"{'attention module':<{width}}  on neighbours: degraded   clean"]
    for name in names:
        degraded = report["degraded"].get(name, float("nan"))
        lines.append(f"{name:<{width}}  {degraded:>24.3f}  {report['clean'][name]:>6.3f}")
    return "\n".join(lines)
