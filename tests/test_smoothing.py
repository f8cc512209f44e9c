"""One-Euro keypoint smoothing against a scalar reference and hand-computed values."""
import math

import numpy as np
import pytest

from pavenet.infer.smoothing import KeypointSmoother, SmoothingConfig

J = 15


def _one_euro_reference(xs, times, min_cutoff, beta, d_cutoff):
    """Scalar One-Euro filter written from the paper, one sample at a time."""
    def alpha(cutoff, dt):
        r = 2 * math.pi * cutoff * dt
        return r / (r + 1)

    out = [xs[0]]
    x_hat, dx_hat = xs[0], 0.0
    for i in range(1, len(xs)):
        dt = times[i] - times[i - 1]
        dx = (xs[i] - x_hat) / dt
        dx_hat = alpha(d_cutoff, dt) * dx + (1 - alpha(d_cutoff, dt)) * dx_hat
        a = alpha(min_cutoff + beta * abs(dx_hat), dt)
        x_hat = a * xs[i] + (1 - a) * x_hat
        out.append(x_hat)
    return np.array(out)


def _people(xy: np.ndarray) -> np.ndarray:
    return np.concatenate([xy, np.full(xy.shape[:-1] + (1,), 0.7)], -1)


def test_first_steps_hand_computed():
    smoother = KeypointSmoother(SmoothingConfig(enabled=True, min_cutoff=1.0, beta=0.0), fps=30)
    first = smoother.smooth(0, [4], _people(np.zeros((1, J, 2))))
    second = smoother.smooth(1, [4], _people(np.full((1, J, 2), 10.0)))
    np.testing.assert_array_equal(first[..., :2], 0.0)
    alpha = 2 * math.pi / (2 * math.pi + 30)
    np.testing.assert_allclose(second[..., :2], 10.0 * alpha, rtol=1e-12)
    np.testing.assert_array_equal(second[..., 2], 0.7)


def test_matches_scalar_reference_with_speed_adaptation_and_frame_gaps():
    cfg = SmoothingConfig(enabled=True, min_cutoff=0.5, beta=0.02, derivative_cutoff=1.5)
    rng = np.random.default_rng(0)
    frames = [0, 1, 2, 4, 5, 9, 10, 11]
    signal = np.cumsum(rng.normal(0, 5, (len(frames), J, 2)), 0) + 100
    smoother = KeypointSmoother(cfg, fps=25)
    got = np.stack([smoother.smooth(f, [0], _people(signal[i][None]))[0, :, :2] for i, f in enumerate(frames)])
    times = np.array(frames) / 25
    for j in range(J):
        for c in range(2):
            ref = _one_euro_reference(signal[:, j, c], times, 0.5, 0.02, 1.5)
            np.testing.assert_allclose(got[:, j, c], ref, rtol=1e-12)


def test_reduces_jitter_on_a_still_person_and_leaves_untracked_people_alone():
    rng = np.random.default_rng(1)
    raw = 50 + rng.normal(0, 2, (60, 2, J, 2))
    smoother = KeypointSmoother(SmoothingConfig(enabled=True), fps=30)
    out = np.stack([smoother.smooth(f, [3, -1], _people(raw[f])) for f in range(60)])
    assert out[20:, 0, :, :2].std() < 0.5 * raw[20:, 0].std()
    np.testing.assert_array_equal(out[:, 1, :, :2], raw[:, 1])


def test_forgotten_track_restarts_from_raw_keypoints():
    smoother = KeypointSmoother(SmoothingConfig(enabled=True, forget_after=5), fps=30)
    smoother.smooth(0, [1], _people(np.zeros((1, J, 2))))
    back = smoother.smooth(10, [1], _people(np.full((1, J, 2), 40.0)))
    np.testing.assert_array_equal(back[..., :2], 40.0)
    with pytest.raises(ValueError, match="not after frame 10"):
        smoother.smooth(10, [1], _people(np.zeros((1, J, 2))))
