"""What :class:`pavenet.infer.estimator.PoseEstimator` returns per frame: the frame's people.

A :class:`PersonPrediction` is one tracked person: track id, keypoints (J, 3) = x, y in pixels
and joint score, in the order of :data:`JOINT_NAMES`, the person score and a box around the
visible joints. A :class:`FramePrediction` holds the people of one frame with its index, its
timestamp in seconds (None when unknown) and, with ``keep_images=True``, the decoded RGB frame;
``plot()`` draws the same overlay as ``pavenet predict --render`` (:func:`pavenet.viz.overlay.compose`),
``to_dict()`` / ``to_json()`` give plain data.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from pavenet.data.joints import MODEL
from pavenet.viz.overlay import compose

#: the joints of every person's keypoints, in order
JOINT_NAMES: tuple[str, ...] = tuple(MODEL.names)
#: joints scoring at least this are visible: they make the person's box (and the CLI's overlay
#: draws them at its default ``--joint-threshold``)
VISIBLE_JOINT_SCORE = 0.05


def overlay_joint_threshold(postprocess_mode: str) -> float:
    """The overlays' default joint threshold: :data:`VISIBLE_JOINT_SCORE`, or 0 (every joint of a
    drawn person) after the released rule (``postprocess.mode: official``), whose joint scores
    are no presence scores (see :func:`pavenet.infer.linker.postprocess_defaults`)."""
    return 0.0 if postprocess_mode == "official" else VISIBLE_JOINT_SCORE


def joint_box(keypoints: np.ndarray, joint_threshold: float = VISIBLE_JOINT_SCORE
              ) -> Optional[tuple[float, float, float, float]]:
    """(x0, y0, x1, y1) around the joints of (J, 3) keypoints scoring >= ``joint_threshold``;
    None when no joint does."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    visible = keypoints[keypoints[:, 2] >= joint_threshold, :2]
    if not len(visible):
        return None
    (x0, y0), (x1, y1) = visible.min(0), visible.max(0)
    return float(x0), float(y0), float(x1), float(y1)


@dataclass
class PersonPrediction:
    """One person in one frame: track id, keypoints (J, 3) = x, y pixels and joint score, score."""

    track_id: int
    keypoints: np.ndarray
    score: float

    @property
    def joint_names(self) -> tuple[str, ...]:
        return JOINT_NAMES

    @property
    def box(self) -> Optional[tuple[float, float, float, float]]:
        """(x0, y0, x1, y1) in pixels around the visible joints (score >= 0.05); None if none is."""
        return joint_box(self.keypoints)

    def to_dict(self) -> dict[str, Any]:
        """``track_id``, ``score``, ``box`` and ``keypoints``: joint name -> [x, y, score]."""
        return {"track_id": int(self.track_id), "score": float(self.score),
                "box": None if self.box is None else list(self.box),
                "keypoints": {name: [float(v) for v in self.keypoints[j]]
                              for j, name in enumerate(JOINT_NAMES)}}


@dataclass
class FramePrediction:
    """The people of one frame; ``image`` is the decoded RGB frame when requested.

    ``best_score``: the highest person score the network gave in this frame, tracked or not
    (0 when it proposed nobody), so that an empty frame can say how far the best guess was
    from the score threshold. ``timestamp``: seconds since the first frame (from the video's
    timestamps or frame rate; None for frames given without a frame rate).
    """

    index: int
    people: list[PersonPrediction]
    image: Optional[np.ndarray] = field(default=None, repr=False)
    best_score: float = 0.0
    timestamp: Optional[float] = None

    @property
    def joint_names(self) -> tuple[str, ...]:
        return JOINT_NAMES

    def arrays(self) -> tuple[np.ndarray, list[int]]:
        """(keypoints (N, J, 3), track ids) of the frame's people, e.g. for drawing."""
        if not self.people:
            return np.zeros((0, len(JOINT_NAMES), 3), np.float32), []
        return np.stack([p.keypoints for p in self.people]), [p.track_id for p in self.people]

    def plot(self, image: Optional[np.ndarray] = None, joint_threshold: float = VISIBLE_JOINT_SCORE) -> np.ndarray:
        """The overlay of this frame, (H, W, 3) RGB uint8: the drawing of ``pavenet predict
        --render`` (same ``joint_threshold``, default 0.05) on ``image`` or the kept frame."""
        frame = self.image if image is None else image
        if frame is None:
            raise ValueError(f"frame {self.index}: no image to draw on; predict with keep_images=True "
                             "or pass plot(image=...)")
        return compose(frame, *self.arrays(), joint_threshold)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (no arrays, no image): index, timestamp, best_score, joint_names, people."""
        return {"index": int(self.index), "timestamp": self.timestamp, "best_score": float(self.best_score),
                "joint_names": list(JOINT_NAMES), "people": [p.to_dict() for p in self.people]}

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as JSON; keyword arguments go to ``json.dumps``."""
        return json.dumps(self.to_dict(), **kwargs)
