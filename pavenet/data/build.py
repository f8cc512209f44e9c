"""``build_dataset``: a :class:`~torch.utils.data.Dataset` of clips from a :class:`DataConfig`.

Folder layouts under ``cfg.root``:

* ``synthetic`` / ``posetrack18`` / ``posetrack21``: ``annotations/<split>/*.json`` (one file
  per sequence) or a merged ``annotations/<split>.json``; image paths relative to the root.
* ``posetrack17``: ``annotations/<split>/*.json`` in the ``annolist`` layout.
* ``coco``: ``annotations/person_keypoints_<split>.json`` and images in ``<split>/``.

``train_short_side`` with two values is an inclusive range, with one value a fixed size.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pavenet.config import DataConfig
from pavenet.data.clips import ClipDataset, DataError, clip_indices, load_image
from pavenet.data.coco import CocoPseudoVideo
from pavenet.data.posetrack import Frame, Sequence, load_directory, load_sequences_from_file
from pavenet.data.posetrack17 import load_posetrack17
from pavenet.data.transforms import ClipParams, sample_params


def _train_params(cfg: DataConfig, rng: np.random.Generator, width: int, height: int) -> ClipParams:
    sides = cfg.train_short_side
    lo, hi = (sides[0], sides[-1]) if sides else (cfg.test_short_side, cfg.test_short_side)
    return sample_params(rng, width, height, (lo, hi), cfg.train_max_size, cfg.flip, cfg.rotation,
                         cfg.crop, cfg.photometric)


def _test_params(cfg: DataConfig, rng: np.random.Generator, width: int, height: int) -> ClipParams:
    return ClipParams(short_side=cfg.test_short_side, max_size=cfg.test_max_size)


def load_split(cfg: DataConfig, split: str) -> list[Sequence]:
    """The sequences of ``split`` for the PoseTrack-style datasets."""
    root = Path(cfg.root)
    folder, merged = root / "annotations" / split, root / "annotations" / f"{split}.json"
    if cfg.dataset == "posetrack17":
        if not folder.is_dir():
            raise DataError(f"{folder}: annotation folder not found")
        return [load_posetrack17(p, root) for p in sorted(folder.glob("*.json"))]
    if folder.is_dir():
        return load_directory(folder, root, skip_bad=cfg.skip_bad)
    if merged.is_file():
        return load_sequences_from_file(merged, root)
    raise DataError(f"{root}: neither {folder} nor {merged} exists (dataset '{cfg.dataset}', split '{split}')")


def labelled_key_clips(cfg: DataConfig, split: str, num_frames: int,
                       max_clips: int = 0) -> Iterator[tuple[Frame, list[np.ndarray]]]:
    """(key frame, its clip's frames as RGB arrays) for every labelled frame of ``split`` that has
    people (the first ``max_clips`` when > 0), clips as the test-time reader builds them."""
    count = 0
    for seq in load_split(cfg, split):
        for key, frame in enumerate(seq.frames):
            if not frame.is_labeled or not frame.persons:
                continue
            idx = clip_indices(key, len(seq.frames), num_frames, cfg.frame_stride)
            yield frame, [np.asarray(load_image(seq.frames[i])) for i in idx]
            count += 1
            if max_clips and count >= max_clips:
                return


def build_dataset(cfg: DataConfig, split: str, num_frames: int, train: bool) -> torch.utils.data.Dataset:
    """Clips of ``num_frames`` frames from ``split``; ``train`` augments, otherwise test-time resize."""
    params = partial(_train_params if train else _test_params, cfg)
    if cfg.dataset == "coco":
        root = Path(cfg.root)
        return CocoPseudoVideo(root / "annotations" / f"person_keypoints_{split}.json", root / split, num_frames,
                               params, max_angle=cfg.pseudo_video_max_angle, skip_bad=cfg.skip_bad)
    gap = cfg.pair_gap if (cfg.pair_clips and train) else 0
    return ClipDataset(load_split(cfg, split), num_frames, params, stride=cfg.frame_stride,
                       pair_gap=gap, skip_bad=cfg.skip_bad)
