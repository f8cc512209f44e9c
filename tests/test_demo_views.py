"""What a newcomer sees: predictions distinguishable from the video's own markers and from the
ground truth, and a clear word when the model predicts nobody."""
from __future__ import annotations

import numpy as np
from test_overlay import J, _person

from pavenet.cli.predict import nobody_note
from pavenet.data.joints import MODEL
from pavenet.demo import nobody_banners
from pavenet.engine.logger import RunLogger
from pavenet.infer.estimator import FramePrediction, PersonPrediction
from pavenet.viz.overlay import (GROUND_TRUTH_COLOR, compose, draw_banner, draw_ground_truth, draw_people,
                                 track_color)
from pavenet.viz.report import rendered_lines


def test_predicted_joints_are_hollow_rings_not_filled_markers() -> None:
    frame = np.zeros((64, 96, 3), np.uint8)
    person = _person(30)
    out = draw_people(frame, person[None], [4], labels=False, thickness=2)
    x, y = person[MODEL.index("head_top"), :2].astype(int)  # (40, 6): only the head-top/nose limb ends there
    assert tuple(out[y, x + 3]) == track_color(4)  # on the ring (radius 3)
    assert tuple(out[y - 1, x + 1]) == (0, 0, 0)  # inside the ring, off the limb: not filled


def test_ground_truth_is_white_crosses_on_annotated_joints_only() -> None:
    frame = np.zeros((40, 40, 3), np.uint8)
    truth = np.zeros((1, J, 3))
    truth[0, 0] = (10, 10, 1)
    truth[0, 1] = (30, 30, 0)  # not annotated
    out = draw_ground_truth(frame, truth, thickness=1)
    assert tuple(out[10, 10]) == GROUND_TRUTH_COLOR and tuple(out[7, 7]) == GROUND_TRUTH_COLOR
    assert tuple(out[10, 7]) == (0, 0, 0)  # a cross, not a box
    assert out[25:35, 25:35].max() == 0
    nobody = _person(10)[None] * [1, 1, 0]  # every joint score 0: no prediction drawn
    np.testing.assert_array_equal(compose(frame, nobody, [1], 0.3, truth), out)
    drawn = compose(frame, _person(10)[None], [1], 0.3, truth)
    assert tuple(drawn[24, 15]) == track_color(1)  # predictions on top of the ground truth


def test_banner_and_nobody_messages_give_the_best_score() -> None:
    frame = np.full((48, 120, 3), 90, np.uint8)
    out = draw_banner(frame, "no person")
    assert (out[0] == 0).all() and (out[1:14] > 200).any() and (out[-1] == 90).all()
    empty = [FramePrediction(0, [], best_score=0.12), FramePrediction(1, [], best_score=0.27)]
    assert nobody_note(empty, 0.4) == ("no person above the score threshold 0.4 in any frame (best person "
                                       "score seen: 0.270); an undertrained model, or lower --score-threshold")
    seen = empty + [FramePrediction(2, [PersonPrediction(3, np.zeros((J, 3)), 0.8)], best_score=0.8)]
    assert nobody_note(seen, 0.4) == ""
    assert nobody_banners(seen, 0.4) == ["no person above score 0.4 (best 0.12)",
                                         "no person above score 0.4 (best 0.27)", ""]
    warning = rendered_lines({"frames": 40, "frames_with_people": 0, "best_score": 0.21, "threshold": 0.4})
    assert any("no person above the score threshold 0.4 in any of the 40 rendered frames" in line and
               "0.210" in line for line in warning)
    assert len(rendered_lines({"frames": 40, "frames_with_people": 3, "best_score": 0.9, "threshold": 0.4})) == 1


def test_a_time_budgeted_bar_has_no_length_until_planned(tmp_path) -> None:
    logger = RunLogger(tmp_path, None, 0, True)
    try:
        assert logger._bar.total is None
        logger.set_total(120)
        assert logger._bar.total == 120
    finally:
        logger.close()


def test_report_warns_when_the_run_trained_too_few_steps() -> None:
    from pavenet.viz.report import undertrained_lines

    assert undertrained_lines(900, 12) == []
    warning = undertrained_lines(16, 12)
    assert warning and "only 16 training steps in 12 minutes" in warning[0]
    assert undertrained_lines(359, 12) and not undertrained_lines(360, 12)  # 30 per minute
