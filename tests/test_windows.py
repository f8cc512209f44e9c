"""Window layout: edge frames repeated, streaming windows equal the batch layout."""
import pytest

from pavenet.infer.windows import SlidingWindows, shared_slots, window_frames


def test_window_frames_hand_cases():
    assert window_frames(0, 10, 3) == [0, 0, 1]
    assert window_frames(5, 10, 3) == [4, 5, 6]
    assert window_frames(9, 10, 3) == [8, 9, 9]
    assert window_frames(1, 10, 5) == [0, 0, 1, 2, 3]
    assert window_frames(8, 10, 5) == [6, 7, 8, 9, 9]
    assert window_frames(0, 1, 5) == [0, 0, 0, 0, 0]
    assert window_frames(4, 10, 1) == [4]


@pytest.mark.parametrize("size", [1, 3, 5])
@pytest.mark.parametrize("num_frames", [1, 2, 3, 4, 7])
def test_sliding_windows_match_batch_layout_and_hold_at_most_size(size, num_frames):
    sliding = SlidingWindows(size)
    windows = []
    for f in range(num_frames):
        windows += sliding.push(f"item{f}")
        assert len(sliding) <= size
    windows += sliding.finish()
    assert [w.key for w in windows] == list(range(num_frames))
    for w in windows:
        expected = window_frames(w.key, num_frames, size)
        assert list(w.frames) == expected
        assert list(w.items) == [f"item{f}" for f in expected]


def test_sliding_windows_emit_as_soon_as_complete():
    sliding = SlidingWindows(5)
    assert sliding.push(0) == [] and sliding.push(1) == []
    first = sliding.push(2)
    assert [w.key for w in first] == [0] and first[0].frames == (0, 0, 0, 1, 2)
    with pytest.raises(RuntimeError):
        sliding.finish(), sliding.push(3)


def test_shared_slots_prefers_centre_of_repeated_edge_frames():
    assert shared_slots([0, 0, 1], [0, 1, 2]) == [(1, 0), (2, 1)]
    assert shared_slots([3, 4, 5], [4, 5, 6]) == [(1, 0), (2, 1)]
    assert shared_slots([0, 0, 0, 1, 2], [0, 0, 1, 2, 3]) == [(2, 1), (3, 2), (4, 3)]
    assert shared_slots([4], [5]) == []


@pytest.mark.parametrize("size", [0, 2, -1])
def test_even_or_empty_window_rejected(size):
    with pytest.raises(ValueError, match="odd"):
        window_frames(0, 5, size)
