"""The temporal split (issue 24): single frames degraded, neighbours clean, annotations exact."""
from __future__ import annotations

import numpy as np
import pytest

from pavenet.data.synthetic import generate_video
from pavenet.data.synthetic_temporal import KINDS, degrade, degraded_frames

SIZE = (128, 96)


def _degraded(ann: dict) -> dict[int, str]:
    return {t: im["degradation"] for t, im in enumerate(ann["images"]) if "degradation" in im}


@pytest.mark.parametrize("seed", [0, 5, 11])
def test_temporal_video_is_the_easy_video_with_single_frames_degraded(seed) -> None:
    easy, easy_ann = generate_video(seed, 24, SIZE, 3, "easy")
    frames, ann = generate_video(seed, 24, SIZE, 3, "temporal")
    again, again_ann = generate_video(seed, 24, SIZE, 3, "temporal")
    assert ann == again_ann and all(np.array_equal(a, b) for a, b in zip(frames, again))  # deterministic
    degraded = _degraded(ann)
    assert degraded and set(degraded.values()) <= set(KINDS)
    assert 0 not in degraded and len(frames) - 1 not in degraded
    assert all(t + 1 not in degraded for t in degraded)  # both neighbours of a degraded frame are clean
    # ground truth exact: the annotations are the clean video's, degraded frames included
    assert ann["annotations"] == easy_ann["annotations"]
    annotated = {a["image_id"] for a in ann["annotations"]}
    assert all(ann["images"][t]["id"] in annotated for t in degraded)
    for t, (clean, got) in enumerate(zip(easy, frames)):
        if t not in degraded:
            assert np.array_equal(clean, got), t
        elif degraded[t] == "dropped":
            assert not got.any() or np.array_equal(got, easy[t - 1]), t
        else:
            assert np.abs(got.astype(int) - clean).mean() > 1.0, (t, degraded[t])


def test_degraded_frames_are_interior_and_never_adjacent() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        chosen = degraded_frames(12, rng)
        assert all(1 <= t <= 10 for t in chosen)
        assert all(t + 1 not in chosen for t in chosen)
    assert degraded_frames(2, rng) == {}


def test_each_degradation_by_hand() -> None:
    rng = np.random.default_rng(0)
    frame = np.full((40, 60, 3), 200, np.uint8)
    frame[20:, 30:] = 20  # one dark quadrant: a horizontal and a vertical edge
    previous = np.full_like(frame, 7)
    joints = [np.array([[10.0, 10.0], [50.0, 30.0], [20.0, 25.0], [40.0, 5.0]])]
    blurred = degrade(frame, previous, "motion", joints, rng)
    smeared = [20 < blurred[20, 35, 0] < 200, 20 < blurred[25, 30, 0] < 200]  # vertical / horizontal blur
    assert blurred.shape == frame.shape and any(smeared)
    grey = np.full((200, 200, 3), 128, np.uint8)
    noise = degrade(grey, previous, "noise", joints, rng).astype(float) - 128
    assert abs(noise.mean()) < 2 and 45 < noise.std() < 80  # sigma 50-80, a little clipped at 0 and 255
    occluded = degrade(frame, previous, "occluder", joints, rng)
    covered = [bool((occluded[int(y), int(x)] == 128).all()) for x, y in joints[0]]
    assert any(covered) and (occluded[(occluded != frame).any(-1)] == 128).all()
    dropped = [degrade(frame, previous, "dropped", joints, rng) for _ in range(20)]
    assert all(not d.any() or np.array_equal(d, previous) for d in dropped)
    assert any(not d.any() for d in dropped) and any(d.any() for d in dropped)
    with pytest.raises(ValueError, match="unknown degradation 'rain'"):
        degrade(frame, previous, "rain", joints, rng)
