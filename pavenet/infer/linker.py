"""Track ids across a video by linking the people of overlapping windows.

There is no detector and no box tracker. The model reads the window (clip) of ``T`` frames
around every key frame ``k`` and returns a set of people, one per query, each with keypoints in
every frame of the window, a score and an embedding. The output for frame ``k`` is the key-frame
pose of the people of window ``k``; :class:`WindowLinker` gives each of them a track id.

Windows ``k`` and ``k+1`` share ``T-1`` frames (stride 1), on which the same person is
predicted twice.
Each new window is matched to the tracks in two stages, each a Hungarian assignment
(``scipy.optimize.linear_sum_assignment``) on a similarity that mixes

* pose similarity: OKS (:data:`pavenet.data.joints.OKS_SIGMAS` times ``sigma_scale``, area =
  keypoint box) averaged over the frames that the track's last window and the new window share;
  with no shared frame (``T = 1``, a window stride > 1, or a track lost for ``T`` frames or
  more) the two windows' frames closest in time are compared;
* embedding cosine similarity (clipped at 0), left out for a pair when either embedding is zero.

Stage 1 links the tracks matched in the previous window (needs ``min_similarity`` and
``min_pose_similarity``); stage 2 lets the remaining people re-find a lost track
(``reid_min_similarity``). Unmatched people start new ids (in order of decreasing score); a track
that stays unmatched for more than ``max_missed`` frames ends. People scoring under
``score_threshold`` are not tracked (id ``-1``). The result does not depend on query order except
for exact ties.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from pavenet.data.joints import OKS_SIGMAS
from pavenet.infer.windows import shared_slots

UNTRACKED = -1


@dataclass
class LinkerConfig:
    """Thresholds and weights of :class:`WindowLinker` (keypoints are in pixels).

    ``sigma_scale`` widens the OKS sigmas: two windows' predictions of the same frame differ by a
    few pixels, and the evaluation sigmas (2.5% of the person scale for the head) would turn
    that into low similarity. ``max_missed`` counts frames; ``min_area`` is in pixels squared.
    """

    #: people under this person score are not tracked; joints under this score do not count
    score_threshold: float = 0.3
    joint_threshold: float = 0.1
    #: similarity of a person to a track: the mean of OKS and embedding cosine with these weights
    pose_weight: float = 1.0
    embedding_weight: float = 0.5
    #: the least similarity (and OKS) of a match; the least cosine that revives a lost track
    min_similarity: float = 0.2
    min_pose_similarity: float = 0.1
    reid_min_similarity: float = 0.5
    #: a track unmatched for more than this many frames ends; its embedding is a running mean
    #: (weight of the old embedding)
    max_missed: int = 30
    embedding_momentum: float = 0.5
    min_area: float = 100.0
    sigma_scale: float = 2.0


def postprocess_defaults(mode: str, score_threshold: float) -> dict[str, float]:
    """The linker settings implied by a config's post-processing (``postprocess.mode`` and
    ``score_threshold``): its person-score threshold, and with ``official`` every joint counting
    in the pose similarity (``joint_threshold`` 0). The released rule's joint score is the person
    score times a localisation confidence from sigma, at most 0.7 and about 0.1 where sigma is
    not trained (an L1 keypoint loss): it says nothing about presence, and under the default
    threshold a model's every pose would count no joint, so that no person is ever linked.
    ``nms_free`` joint scores include the visibility; there the default threshold stays."""
    out = {"score_threshold": score_threshold}
    if mode == "official":
        out["joint_threshold"] = 0.0
    return out


@dataclass
class WindowPeople:
    """The people of one window.

    Attributes:
        frames: (T,) frame index of every slot of the window (edge frames repeated).
        keypoints: (N, T, J, 3) x, y in pixels and per-joint score, for every slot.
        scores: (N,) person score.
        embeddings: (N, E) query embedding (zeros if the model has none).
    """

    frames: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames, dtype=np.int64).reshape(-1)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float64)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.embeddings = np.asarray(self.embeddings, dtype=np.float64)
        n, t = len(self.scores), len(self.frames)
        if self.keypoints.ndim != 4 or self.keypoints.shape[:2] != (n, t) or self.keypoints.shape[3] != 3:
            raise ValueError(f"keypoints must be (N={n}, T={t}, J, 3), got {self.keypoints.shape}")
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != n:
            raise ValueError(f"embeddings must be (N={n}, E), got {self.embeddings.shape}")

    @classmethod
    def from_clip(cls, frames: Sequence[int], clip: Sequence[Mapping[str, Any]]) -> WindowPeople:
        """Gather one clip of the post-processor's output (T dicts, docs/interfaces.md).

        The post-processor reports the same queries in every frame of a clip, so entry ``i`` of
        every frame is the same person; this is checked through ``query_index``.
        """
        if len(clip) != len(frames):
            raise ValueError(f"{len(clip)} frames of output for a window of {len(frames)} frames")
        first = _numpy(clip[0]["query_index"])
        for t, entry in enumerate(clip):
            if not np.array_equal(_numpy(entry["query_index"]), first):
                raise ValueError(f"frame {t} of the clip reports other queries than frame 0")
        keypoints = np.stack([_numpy(entry["keypoints"]) for entry in clip], axis=1)
        return cls(frames, keypoints, _numpy(clip[0]["scores"]), _numpy(clip[0]["embedding"]))

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def key_slot(self) -> int:
        return len(self.frames) // 2


@dataclass
class _Track:
    track_id: int
    frames: np.ndarray
    keypoints: np.ndarray
    embedding: np.ndarray
    last_seen: int


def _numpy(value: Any) -> np.ndarray:
    """A NumPy copy of an array or a (possibly GPU, possibly bf16) torch tensor."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    return np.asarray(value)


def _nearest_slot(frames: np.ndarray, frame: int) -> int:
    """Slot showing ``frame``, the one nearest the window centre when it is repeated."""
    slots = np.flatnonzero(frames == frame)
    return int(slots[np.argmin(np.abs(slots - (len(frames) - 1) / 2))])


def _box_area(keypoints: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(...) area of the box around the visible joints of (..., J, 2) keypoints; 0 if none."""
    any_visible = visible.any(-1)[..., None]
    lo = np.where(visible[..., None], keypoints, np.inf).min(-2)
    hi = np.where(visible[..., None], keypoints, -np.inf).max(-2)
    size = np.where(any_visible, hi - np.where(any_visible, lo, 0.0), 0.0)
    return size[..., 0] * size[..., 1]


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.where(norm > 1e-8, vectors / np.maximum(norm, 1e-12), 0.0)


class WindowLinker:
    """Assign track ids to the people of consecutive windows (see the module docstring)."""

    def __init__(self, cfg: LinkerConfig | None = None) -> None:
        self.cfg = cfg or LinkerConfig()
        self._tracks: dict[int, _Track] = {}
        self._next_id = 0
        self._last_key: int | None = None

    @property
    def num_tracks(self) -> int:
        """Number of tracks alive (matched recently enough to be continued or re-found)."""
        return len(self._tracks)

    def pose_similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Mean OKS between pose sequences a (..., S, J, 3) and b (..., S, J, 3), shape (...).

        Joints count where both scores reach ``joint_threshold``; the OKS area is the mean of the
        two keypoint boxes (at least ``min_area``); frames without a common joint are skipped.
        COCO's formula, in NumPy: the linker runs per frame on a few dozen poses, where torch's
        per-call overhead (the matcher's ``pavenet.model.oks``) would dominate.
        """
        vis_a = a[..., 2] >= self.cfg.joint_threshold
        vis_b = b[..., 2] >= self.cfg.joint_threshold
        both = vis_a & vis_b
        area = 0.5 * (_box_area(a[..., :2], vis_a) + _box_area(b[..., :2], vis_b))
        area = np.maximum(area, self.cfg.min_area)
        variance = (2.0 * OKS_SIGMAS * self.cfg.sigma_scale) ** 2
        d2 = ((a[..., :2] - b[..., :2]) ** 2).sum(-1)
        k = np.exp(-d2 / (2.0 * area[..., None] * variance))
        counted = both.sum(-1)
        per_frame = (k * both).sum(-1) / np.maximum(counted, 1)
        return (per_frame * (counted > 0)).sum(-1) / np.maximum((counted > 0).sum(-1), 1)

    def _track_pose_similarity(self, track: _Track, people: WindowPeople) -> np.ndarray:
        pairs = shared_slots(track.frames.tolist(), people.frames.tolist())
        if pairs:
            slots_a, slots_b = [p[0] for p in pairs], [p[1] for p in pairs]
        else:  # no shared frame: the two frames closest in time, the track's latest on a tie
            frame_pairs = ((a, b) for a in set(track.frames.tolist()) for b in set(people.frames.tolist()))
            fa, fb = min(frame_pairs, key=lambda p: (abs(p[0] - p[1]), -p[0], p[1]))
            slots_a, slots_b = [_nearest_slot(track.frames, fa)], [_nearest_slot(people.frames, fb)]
        return self.pose_similarity(track.keypoints[None, slots_a], people.keypoints[:, slots_b])

    def _similarity(self, tracks: list[_Track], people: WindowPeople) -> tuple[np.ndarray, np.ndarray]:
        """(combined, pose) similarity matrices, each (len(tracks), len(people))."""
        if not tracks or len(people) == 0:
            empty = np.zeros((len(tracks), len(people)))
            return empty, empty
        pose = np.stack([self._track_pose_similarity(t, people) for t in tracks])
        track_emb = _normalise(np.stack([t.embedding for t in tracks]))
        people_emb = _normalise(people.embeddings)
        valid = (np.abs(track_emb).sum(-1)[:, None] > 0) & (np.abs(people_emb).sum(-1)[None, :] > 0)
        cosine = np.clip(track_emb @ people_emb.T, 0.0, 1.0)
        w_pose, w_emb = self.cfg.pose_weight, self.cfg.embedding_weight * valid
        combined = (w_pose * pose + w_emb * cosine) / np.maximum(w_pose + w_emb, 1e-12)
        return combined, pose

    @staticmethod
    def _assign(similarity: np.ndarray, allowed: np.ndarray) -> list[tuple[int, int]]:
        """Hungarian assignment maximising similarity over the allowed pairs only."""
        if not allowed.any():
            return []
        cost = np.where(allowed, 1.0 - similarity, 1e6)
        rows, cols = linear_sum_assignment(cost)
        return [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]

    def _match(self, tracks: list[_Track], people: WindowPeople, candidates: list[int],
               reid: bool) -> dict[int, int]:
        """Match ``candidates`` (indices into people) to ``tracks``; return person -> track id."""
        if not tracks or not candidates:
            return {}
        subset = WindowPeople(people.frames, people.keypoints[candidates], people.scores[candidates],
                              people.embeddings[candidates])
        combined, pose = self._similarity(tracks, subset)
        if reid:
            allowed = combined >= self.cfg.reid_min_similarity
        else:
            allowed = (combined >= self.cfg.min_similarity) & (pose >= self.cfg.min_pose_similarity)
        return {candidates[c]: tracks[r].track_id for r, c in self._assign(combined, allowed)}

    def update(self, key: int, people: WindowPeople) -> list[int]:
        """Link the people of the window whose key frame is ``key``; return one id per person.

        Key frames must increase from call to call. People under ``score_threshold`` get
        :data:`UNTRACKED` (-1).
        """
        if self._last_key is not None and key <= self._last_key:
            raise ValueError(f"key frames must increase: got {key} after {self._last_key}")
        if len(people.frames) and int(people.frames[people.key_slot]) != key:
            raise ValueError(f"window centre shows frame {int(people.frames[people.key_slot])}, not key frame {key}")
        self._tracks = {i: t for i, t in self._tracks.items() if key - t.last_seen - 1 <= self.cfg.max_missed}
        previous = self._last_key
        self._last_key = key
        candidates = [i for i in range(len(people)) if people.scores[i] >= self.cfg.score_threshold]
        active = [t for t in self._tracks.values() if t.last_seen == previous]
        assigned = self._match(active, people, candidates, reid=False)
        lost = [t for t in self._tracks.values() if t.last_seen != previous]
        rest = [i for i in candidates if i not in assigned]
        assigned.update(self._match(lost, people, rest, reid=True))
        for i in sorted((i for i in candidates if i not in assigned), key=lambda i: -people.scores[i]):
            assigned[i] = self._next_id
            self._next_id += 1
        for i, track_id in assigned.items():
            self._store(track_id, key, people, i)
        return [assigned.get(i, UNTRACKED) for i in range(len(people))]

    def _store(self, track_id: int, key: int, people: WindowPeople, index: int) -> None:
        embedding = _normalise(people.embeddings[index])
        old = self._tracks.get(track_id)
        if old is not None and np.abs(old.embedding).sum() > 0 and np.abs(embedding).sum() > 0:
            m = self.cfg.embedding_momentum
            embedding = _normalise(m * old.embedding + (1.0 - m) * embedding)
        self._tracks[track_id] = _Track(track_id, people.frames.copy(), people.keypoints[index].copy(),
                                        embedding, key)
