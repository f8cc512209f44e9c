"""Window layout: edge frames repeated, streaming windows equal the batch layout."""
import pytest

from pavenet.data.clips import clip_indices
from pavenet.infer.windows import SlidingWindows, shared_slots, window_frames


def test_window_frames_hand_cases():
    assert window_frames(0, 10, 3) == [0, 0, 1]
    assert window_frames(5, 10, 3) == [4, 5, 6]
    assert window_frames(9, 10, 3) == [8, 9, 9]
    assert window_frames(1, 10, 5) == [1, 0, 1, 2, 3]
    assert window_frames(8, 10, 5) == [6, 7, 8, 9, 8]
    assert window_frames(0, 1, 5) == [0, 0, 0, 0, 0]
    assert window_frames(4, 10, 1) == [4]
    assert window_frames(3, 10, 3, stride=2) == [1, 3, 5]
    assert window_frames(1, 10, 5, stride=2) == [1, 1, 1, 3, 5]


@pytest.mark.parametrize("size", [1, 3, 5])
@pytest.mark.parametrize("stride", [1, 2])
def test_windows_follow_the_training_clip_rule(size, stride):
    for num_frames in [1, 2, 5, 9]:
        for key in range(num_frames):
            assert window_frames(key, num_frames, size, stride) == clip_indices(key, num_frames, size, stride)


@pytest.mark.parametrize("size, stride", [(1, 1), (3, 1), (5, 1), (3, 2), (5, 3)])
@pytest.mark.parametrize("num_frames", [1, 2, 3, 4, 7, 12])
def test_sliding_windows_match_batch_layout_and_hold_few_items(size, stride, num_frames):
    sliding = SlidingWindows(size, stride)
    windows = []
    for f in range(num_frames):
        windows += sliding.push(f"item{f}")
        assert len(sliding) <= (size - 1) * stride + 1
    windows += sliding.finish()
    assert [w.key for w in windows] == list(range(num_frames))
    for w in windows:
        expected = window_frames(w.key, num_frames, size, stride)
        assert list(w.frames) == expected
        assert list(w.items) == [f"item{f}" for f in expected]


def test_sliding_windows_emit_as_soon_as_complete():
    sliding = SlidingWindows(5)
    assert sliding.push(0) == [] and sliding.push(1) == []
    first = sliding.push(2)
    assert [w.key for w in first] == [0] and first[0].frames == (0, 0, 0, 1, 2)
    assert [w.frames for w in sliding.push(3)] == [(1, 0, 1, 2, 3)]
    with pytest.raises(RuntimeError):
        sliding.finish(), sliding.push(3)


def test_shared_slots_prefers_centre_of_repeated_edge_frames():
    assert shared_slots([0, 0, 1], [0, 1, 2]) == [(1, 0), (2, 1)]
    assert shared_slots([3, 4, 5], [4, 5, 6]) == [(1, 0), (2, 1)]
    assert shared_slots([0, 0, 0, 1, 2], [1, 0, 1, 2, 3]) == [(2, 1), (3, 2), (4, 3)]
    assert shared_slots([4], [5]) == []


@pytest.mark.parametrize("size", [0, 2, -1])
def test_even_or_empty_window_rejected(size):
    with pytest.raises(ValueError, match="odd"):
        window_frames(0, 5, size)
    with pytest.raises(ValueError, match="stride"):
        SlidingWindows(3, 0)
