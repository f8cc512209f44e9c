"""Overlay drawing (track colours on skeleton pixels) and rendered overlay videos."""
from fractions import Fraction

import numpy as np
import pytest

from pavenet.data.joints import MODEL, posetrack18_to_model
from pavenet.data.synthetic import generate_video
from pavenet.infer.video_io import FrameStream, VideoInputError, VideoSource, probe
from pavenet.infer.video_writer import VideoWriter
from pavenet.viz.overlay import UNTRACKED_COLOR, draw_people, render_video, track_color

J = len(MODEL)


def _person(x0: float, score: float = 0.9) -> np.ndarray:
    """(J, 3) figure with a horizontal shoulder line at y = 24 and hips at y = 40."""
    kp = np.zeros((J, 3))
    pts = {"head_top": (x0 + 10, 6), "nose": (x0 + 10, 12), "head_bottom": (x0 + 10, 18),
           "left_shoulder": (x0, 24), "right_shoulder": (x0 + 20, 24), "left_elbow": (x0, 32),
           "right_elbow": (x0 + 20, 32), "left_wrist": (x0, 38), "right_wrist": (x0 + 20, 38),
           "left_hip": (x0 + 4, 40), "right_hip": (x0 + 16, 40), "left_knee": (x0 + 4, 50),
           "right_knee": (x0 + 16, 50), "left_ankle": (x0 + 4, 60), "right_ankle": (x0 + 16, 60)}
    for name, (x, y) in pts.items():
        kp[MODEL.index(name)] = (x, y, score)
    return kp


def test_track_colours_are_fixed_and_distinct():
    colours = [track_color(i) for i in range(12)]
    assert len(set(colours)) == 12 and colours == [track_color(i) for i in range(12)]
    assert track_color(-1) == UNTRACKED_COLOR


def test_skeleton_pixels_take_the_track_colour():
    frame = np.zeros((64, 96, 3), np.uint8)
    a, b = _person(8), _person(56)
    b[MODEL.index("left_knee"), 2] = 0.1  # under the threshold: its limbs are not drawn
    out = draw_people(frame, np.stack([a, b]), [3, 7], joint_threshold=0.3, labels=False)
    assert frame.max() == 0  # the input is not modified
    assert tuple(out[24, 18]) == track_color(3)  # middle of person a's shoulder line
    assert tuple(out[24, 66]) == track_color(7)
    assert tuple(out[45, 12]) == track_color(3)  # a's left thigh (hip (12,40) -> knee (12,50))
    assert tuple(out[45, 60]) == (0, 0, 0)  # b's left thigh: knee under the threshold
    assert tuple(out[55, 60]) == (0, 0, 0)  # b's left shin
    assert tuple(out[55, 72]) == track_color(7)  # b's right shin is drawn
    assert out[:, 40:50].max() == 0 and out[:4].max() == 0  # nothing drawn between or above
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert colours == {(0, 0, 0), track_color(3), track_color(7)}


def test_a_released_rule_person_is_drawn_whole_at_the_default_threshold():
    """postprocess.mode official: joint score = person score x p(sigma), 0.04 for an untrained
    sigma. The overlays' default for that mode draws every joint; the plain default (0.05)
    would draw nothing of that person."""
    from pavenet.infer.results import VISIBLE_JOINT_SCORE, overlay_joint_threshold

    frame = np.zeros((64, 48, 3), np.uint8)
    person = _person(8, score=0.04)
    assert overlay_joint_threshold("nms_free") == VISIBLE_JOINT_SCORE == 0.05
    assert draw_people(frame, person[None], [2], overlay_joint_threshold("nms_free"), labels=False).max() == 0
    out = draw_people(frame, person[None], [2], overlay_joint_threshold("official"), labels=False)
    assert tuple(out[24, 18]) == track_color(2) and tuple(out[55, 12]) == track_color(2)  # shoulders, shin


def test_labels_drawn_above_people_and_empty_frames_unchanged():
    frame = np.zeros((64, 96, 3), np.uint8)
    person = _person(30)
    person[:, 1] += 20  # head top at y = 26, room above for the label
    out = draw_people(frame, person[None], [5])
    above = out[:26, 20:70].reshape(-1, 3)
    assert (above == track_color(5)).all(1).any()
    assert not (draw_people(frame, person[None], [5], labels=False)[:24] != 0).any()
    np.testing.assert_array_equal(draw_people(frame, np.zeros((0, J, 3)), []), frame)
    with pytest.raises(ValueError, match="2 track ids for 1 people"):
        draw_people(frame, person[None], [1, 2])


@pytest.fixture(scope="module")
def synthetic_clip(tmp_path_factory):
    frames, ann = generate_video(5, 30, (96, 64), max_persons=2)
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    with VideoWriter(path, Fraction(24)) as writer:
        for f in frames:
            writer.write(f)
    per_frame = {img["id"]: ([], []) for img in ann["images"]}
    for a in ann["annotations"]:
        per_frame[a["image_id"]][0].append(posetrack18_to_model(np.asarray(a["keypoints"], float).reshape(17, 3)))
        per_frame[a["image_id"]][1].append(a["track_id"])
    people = [(np.array(k).reshape(-1, J, 3), ids) for k, ids in per_frame.values()]
    return VideoSource(path, "video"), people


def test_rendered_video_has_the_input_frame_count_and_rate(tmp_path, synthetic_clip):
    source, people = synthetic_clip
    out = render_video(source, people, tmp_path / "overlay.mp4")
    assert out == tmp_path / "overlay.mp4" and sorted(p.name for p in tmp_path.iterdir()) == ["overlay.mp4"]
    info = probe(VideoSource(out, "video"))
    assert (info.rate, info.width, info.height) == (Fraction(24), 96, 64)
    with FrameStream(VideoSource(out, "video")) as stream:
        assert sum(1 for _ in stream) == 30


@pytest.mark.parametrize("count", [29, 31])
def test_prediction_count_mismatch_is_an_error_and_writes_nothing(tmp_path, synthetic_clip, count):
    source, people = synthetic_clip
    people = (people + people)[:count]
    with pytest.raises(VideoInputError, match="clip.mp4: (predictions end at frame 29|more predictions than the 30)"):
        render_video(source, people, tmp_path / "overlay.mp4")
    assert list(tmp_path.iterdir()) == []
