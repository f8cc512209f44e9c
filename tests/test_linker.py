"""Window linking: oracle windows from synthetic ground truth keep every identity; unit cases."""
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from pavenet.data.joints import OKS_SIGMAS, model_to_posetrack18, posetrack18_to_model
from pavenet.data.synthetic import generate_video
from pavenet.eval.posetrack import evaluate_posetrack
from pavenet.infer.linker import UNTRACKED, LinkerConfig, WindowLinker, WindowPeople
from pavenet.infer.windows import window_frames

J = 15
SIZE = (160, 120)


@lru_cache(maxsize=None)
def _annotations(seed: int) -> dict:
    return generate_video(seed, 30, SIZE, max_persons=3)[1]


def _video(seed: int) -> tuple[list[int], dict[int, dict[int, np.ndarray]]]:
    """Ground truth of the 30-frame synthetic video ``seed`` (see ``_ground_truth``)."""
    return _ground_truth(_annotations(seed))


def _ground_truth(ann: dict) -> tuple[list[int], dict[int, dict[int, np.ndarray]]]:
    """Image ids in order and, per frame index, {track id: (J, 3) model keypoints}."""
    image_ids = [img["id"] for img in ann["images"]]
    frame_of = {image_id: f for f, image_id in enumerate(image_ids)}
    gt: dict[int, dict[int, np.ndarray]] = {f: {} for f in range(len(image_ids))}
    for a in ann["annotations"]:
        kp = posetrack18_to_model(np.asarray(a["keypoints"], np.float64).reshape(17, 3))
        gt[frame_of[a["image_id"]]][a["track_id"]] = kp
    return image_ids, gt


def _overlapping_pairs(gt: dict[int, dict[int, np.ndarray]]) -> int:
    """Number of (frame, pair of people) whose keypoint boxes overlap."""
    count = 0
    for people in gt.values():
        boxes = [(*kp[kp[:, 2] > 0, :2].min(0), *kp[kp[:, 2] > 0, :2].max(0)) for kp in people.values()]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                count += a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
    return count


def _oracle_windows(gt, size, rng, embeddings, noise=0.0, distractors=2):
    """Per key frame: (true track id per query, WindowPeople) with shuffled query order."""
    n = len(gt)
    out = []
    for key in range(n):
        frames = window_frames(key, n, size)
        tracks = sorted(gt[key])
        kps = np.zeros((len(tracks) + distractors, size, J, 3))
        for q, track in enumerate(tracks):
            for slot, f in enumerate(frames):
                if track in gt[f]:
                    kps[q, slot] = gt[f][track]
        kps[:, :, :, :2] += rng.normal(0.0, noise, kps[:, :, :, :2].shape) * (kps[:, :, :, 2:] > 0)
        kps[len(tracks):] = np.concatenate([rng.uniform(0, 100, (distractors, size, J, 2)),
                                            np.full((distractors, size, J, 1), 0.9)], -1)
        scores = np.r_[np.full(len(tracks), 0.9), np.full(distractors, 0.05)]
        emb = np.stack([embeddings[t] for t in tracks] + [rng.normal(size=8) for _ in range(distractors)])
        order = rng.permutation(len(scores))
        truth = (tracks + [UNTRACKED] * distractors)
        out.append(([truth[i] for i in order], WindowPeople(frames, kps[order], scores[order], emb[order])))
    return out


def _link(windows, cfg=None):
    linker = WindowLinker(cfg)
    pairs = []  # (frame, true id, predicted id)
    for key, (truth, people) in enumerate(windows):
        ids = linker.update(key, people)
        pairs += [(key, t, p) for t, p in zip(truth, ids)]
    return pairs


def _identity_switches(pairs) -> int:
    """Changes of predicted id along each true track + predicted ids shared by two tracks."""
    switches = 0
    last: dict[int, int] = {}
    owner: dict[int, int] = {}
    for _, true, pred in sorted(pairs):
        if true == UNTRACKED:
            continue
        switches += true in last and last[true] != pred
        switches += pred in owner and owner[pred] != true
        last[true], owner[pred] = pred, true
    return switches


def _posetrack_mota(tmp_path: Path, seed: int, pairs) -> float:
    """Total MOTA through the PoseTrack evaluator (``pavenet eval``) of the ground-truth key-frame
    poses carrying the linker's ids, so that only the ids (not keypoint noise) are evaluated."""
    gt_ann = _annotations(seed)
    image_ids, gt = _ground_truth(gt_ann)
    anns = []
    for frame, true_id, track_id in pairs:
        if true_id != UNTRACKED:
            kp17 = model_to_posetrack18(gt[frame][true_id])
            anns.append({"image_id": image_ids[frame], "track_id": int(track_id),
                         "keypoints": kp17.reshape(-1).tolist(), "scores": kp17[:, 2].tolist()})
    for folder, data in [("gt", gt_ann), ("pred", {**gt_ann, "annotations": anns})]:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "video.json").write_text(json.dumps(data))
    return evaluate_posetrack(tmp_path / "gt", tmp_path / "pred")["mota"]["total"]


def _embeddings(kind: str, rng, num_tracks: int = 10) -> dict[int, np.ndarray]:
    if kind == "zeros":
        return {t: np.zeros(8) for t in range(num_tracks)}
    return {t: rng.normal(size=8) for t in range(num_tracks)}


@pytest.mark.parametrize("seed", [3, 7, 12])
@pytest.mark.parametrize("size", [1, 3, 5])
@pytest.mark.parametrize("embedding", ["zeros", "random"])
def test_oracle_windows_of_crossing_people_keep_every_identity(tmp_path, seed, size, embedding):
    _, gt = _video(seed)
    assert len({t for p in gt.values() for t in p}) == 3 and _overlapping_pairs(gt) > 0
    rng = np.random.default_rng(seed)
    windows = _oracle_windows(gt, size, rng, _embeddings(embedding, rng))
    pairs = _link(windows)
    assert _posetrack_mota(tmp_path, seed, pairs) == 100.0
    assert len(pairs) == sum(len(p) + 2 for p in gt.values())
    assert all(p == UNTRACKED for _, t, p in pairs if t == UNTRACKED)
    assert all(p >= 0 for _, t, p in pairs if t != UNTRACKED)
    assert _identity_switches(pairs) == 0
    assert sorted({p for _, t, p in pairs if t != UNTRACKED}) == [0, 1, 2]


def test_identity_checks_catch_a_swap(tmp_path):
    """The two checks above can fail: swapping two ids halfway gives switches and MOTA < 100."""
    _, gt = _video(3)
    rng = np.random.default_rng(3)
    pairs = _link(_oracle_windows(gt, 3, rng, _embeddings("zeros", rng)))
    swap = {0: 1, 1: 0}
    swapped = [(f, t, swap.get(p, p) if f >= 15 else p) for f, t, p in pairs]
    assert _identity_switches(swapped) > 0
    assert _posetrack_mota(tmp_path, 3, swapped) < 100.0


def _non_crossing_video() -> int:
    for seed in range(40):
        _, gt = _video(seed)
        if len({t for p in gt.values() for t in p}) >= 2 and _overlapping_pairs(gt) == 0:
            return seed
    raise AssertionError("no synthetic video with people who never cross among 40 seeds")


@pytest.mark.parametrize("size", [1, 3, 5])
def test_noisy_oracle_windows_of_separate_people_keep_every_identity(tmp_path, size):
    seed = _non_crossing_video()
    _, gt = _video(seed)
    rng = np.random.default_rng(0)
    windows = _oracle_windows(gt, size, rng, _embeddings("zeros", rng), noise=3.0)
    pairs = _link(windows)
    assert _identity_switches(pairs) == 0
    assert _posetrack_mota(tmp_path, seed, pairs) == 100.0
    assert len({p for _, t, p in pairs if t != UNTRACKED}) == len({t for p in gt.values() for t in p})


def _pose(cx: float, cy: float, height: float = 60.0) -> np.ndarray:
    """(J, 3) upright figure centred at (cx, cy), every joint scored 1."""
    offsets = np.array([[0, -.38], [0, -.3], [0, -.5], [-.12, -.25], [.12, -.25], [-.18, -.1], [.18, -.1],
                        [-.2, .05], [.2, .05], [-.08, .05], [.08, .05], [-.09, .25], [.09, .25], [-.1, .45], [.1, .45]])
    return np.concatenate([np.array([cx, cy]) + height * offsets, np.ones((J, 1))], 1)


def _window(key: int, poses: list[np.ndarray], embeddings=None, scores=None, size: int = 1) -> WindowPeople:
    frames = [key + o for o in range(-(size // 2), size // 2 + 1)]
    kps = np.stack([np.stack([p] * size) for p in poses]) if poses else np.zeros((0, size, J, 3))
    emb = np.zeros((len(poses), 4)) if embeddings is None else np.asarray(embeddings, float)
    sc = np.full(len(poses), 0.9) if scores is None else scores
    return WindowPeople(frames, kps, sc, emb)


def test_pose_similarity_matches_hand_computed_oks():
    cfg = LinkerConfig(sigma_scale=1.5)
    linker = WindowLinker(cfg)
    a = _pose(50, 50)
    b = a.copy()
    b[11, :2] += [3.0, 4.0]  # left knee moved by 5 px, still inside the box
    b[14, :2] += [9.0, 8.0]  # right ankle (6, 27) -> (15, 35): b's box grows from 24 x 57 to 27 x 65
    b[0, 2] = 0.05  # nose under joint_threshold (0.1) in b: not counted
    area_a = 24.0 * 57.0
    area_b = 27.0 * 65.0
    area = 0.5 * (area_a + area_b)
    k = np.exp(-np.array([25.0, 145.0]) / (2 * area * (2 * OKS_SIGMAS[[11, 14]] * 1.5) ** 2))
    expected = (12 + k.sum()) / 14
    got = linker.pose_similarity(a[None], b[None])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert linker.pose_similarity(a[None], a[None]) == pytest.approx(1.0)
    hidden = a.copy()
    hidden[:, 2] = 0.0  # a frame without common joints is skipped, not counted as 0
    pair = linker.pose_similarity(np.stack([a, a]), np.stack([b, hidden]))
    np.testing.assert_allclose(pair, expected, rtol=1e-12)


def test_low_score_people_are_not_tracked_and_start_no_track():
    linker = WindowLinker(LinkerConfig(score_threshold=0.5))
    ids = linker.update(0, _window(0, [_pose(30, 40), _pose(100, 40)], scores=np.array([0.2, 0.8])))
    assert ids == [UNTRACKED, 0] and linker.num_tracks == 1
    assert linker.update(1, _window(1, [])) == []


@pytest.mark.parametrize("gap, same", [(3, True), (4, False)])
def test_lost_track_refound_within_max_missed_frames(gap, same):
    linker = WindowLinker(LinkerConfig(max_missed=3))
    first = linker.update(0, _window(0, [_pose(40, 40), _pose(120, 40)]))
    for key in range(1, gap + 1):  # the person on the left is missed for `gap` frames
        assert linker.update(key, _window(key, [_pose(120, 40)])) == [first[1]]
    back = linker.update(gap + 1, _window(gap + 1, [_pose(41, 40), _pose(120, 40)]))
    assert back[1] == first[1]
    assert (back[0] == first[0]) is same
    assert back[0] == (first[0] if same else 2)


def test_lost_track_refound_far_away_by_embedding_only_when_embeddings_exist():
    emb = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    for embeddings, expected in [(emb, [0, 1]), (np.zeros((2, 4)), [2, 1])]:
        linker = WindowLinker(LinkerConfig(reid_min_similarity=0.3))
        assert linker.update(0, _window(0, [_pose(40, 40), _pose(140, 40)], embeddings)) == [0, 1]
        linker.update(1, _window(1, [_pose(140, 40)], embeddings[1:]))
        # person 0 comes back 60 px away (no pose overlap): only the embedding can re-find it
        assert linker.update(2, _window(2, [_pose(100, 40), _pose(140, 40)], embeddings)) == expected


def test_new_ids_follow_score_order_and_ids_do_not_depend_on_query_order():
    poses = [_pose(30, 40), _pose(90, 40), _pose(150, 40)]
    scores = np.array([0.5, 0.9, 0.7])
    linker = WindowLinker()
    assert linker.update(0, _window(0, poses, scores=scores, size=3)) == [2, 0, 1]
    shuffled = [2, 0, 1]
    moved = [p + np.array([1.0, 0, 0]) for p in poses]
    ids = linker.update(1, _window(1, [moved[i] for i in shuffled], scores=scores[shuffled], size=3))
    assert ids == [1, 2, 0]


def test_bad_calls_are_rejected():
    linker = WindowLinker()
    linker.update(5, _window(5, [_pose(30, 40)], size=3))
    with pytest.raises(ValueError, match="must increase"):
        linker.update(5, _window(5, [_pose(30, 40)], size=3))
    with pytest.raises(ValueError, match="not key frame 7"):
        linker.update(7, _window(6, [_pose(30, 40)], size=3))
    with pytest.raises(ValueError, match="keypoints must be"):
        WindowPeople([0, 1, 2], np.zeros((2, 3, J, 2)), np.ones(2), np.zeros((2, 4)))


def test_window_people_from_postprocessor_clip():
    import torch

    rng = np.random.default_rng(0)
    kps = rng.uniform(0, 50, (2, 3, J, 3))
    index = torch.tensor([7, 2])
    emb = torch.tensor(rng.normal(size=(2, 4)), dtype=torch.bfloat16)
    clip = [{"keypoints": torch.tensor(kps[:, t], dtype=torch.float32), "scores": torch.tensor([0.9, 0.4]),
             "query_index": index, "embedding": emb} for t in range(3)]
    people = WindowPeople.from_clip([4, 5, 6], clip)
    np.testing.assert_allclose(people.keypoints, kps, rtol=1e-6)
    np.testing.assert_allclose(people.scores, [0.9, 0.4], rtol=1e-6)
    np.testing.assert_array_equal(people.embeddings, emb.float().numpy())
    assert people.frames.tolist() == [4, 5, 6] and people.key_slot == 1
    clip[2] = {**clip[2], "query_index": torch.tensor([2, 7])}
    with pytest.raises(ValueError, match="frame 2 of the clip reports other queries"):
        WindowPeople.from_clip([4, 5, 6], clip)


def test_windows_without_shared_frames_compare_the_frames_closest_in_time():
    """Stride 2: windows [0, 0, 2] and [1, 3, 5] share no frame; frames 2 and 1 are compared."""
    linker = WindowLinker()
    near, far = _pose(40, 40), _pose(140, 40)
    first = WindowPeople([0, 0, 2], np.stack([np.stack([far, far, near])]), [0.9], np.zeros((1, 4)))
    second = WindowPeople([1, 3, 5], np.stack([np.stack([near + [2.0, 0, 0], far, far])]), [0.9], np.zeros((1, 4)))
    assert linker.update(0, first) == [0]
    assert linker.update(3, second) == [0]
    third = WindowPeople([4, 6, 8], np.stack([np.stack([near, far, far])]), [0.9], np.zeros((1, 4)))
    assert linker.update(6, third) == [1]  # frame 5 (far) vs frame 4 (near): a new person


def _released_rule_windows(count: int, sigma: float, score: float = 0.5) -> list[WindowPeople]:
    """One person walking 2 px per frame, T=3 windows, each joint scored as the released rule
    (``postprocess.mode: official``) scores it: person score x p(sigma)."""
    import torch

    from pavenet.model.postprocess import released_joint_confidence

    p = float(released_joint_confidence(torch.full((J, 2), sigma))[0])
    windows = []
    for key in range(count):
        frames = [max(key - 1, 0), key, min(key + 1, count - 1)]
        poses = [_pose(40 + 2 * f, 50) for f in frames]
        for pose in poses:
            pose[:, 2] = score * p
        windows.append(WindowPeople(frames, np.stack(poses)[None], [score], np.zeros((1, 4))))
    return windows


def test_released_rule_joint_scores_keep_one_track_with_the_official_defaults():
    """sigma 0.45 (not trained, as with an L1 keypoint loss): joint scores 0.5 x 0.08 = 0.04.
    Under the plain joint threshold (0.1) no joint counts and every window starts a new id
    (what the synthetic demo's tracking did before the official defaults); with them the
    person keeps id 0."""
    from pavenet.infer.linker import postprocess_defaults

    windows = _released_rule_windows(8, sigma=0.45)
    assert 0.03 < windows[0].keypoints[0, 0, 0, 2] < 0.05
    plain = WindowLinker(LinkerConfig(score_threshold=0.4))
    assert [plain.update(k, w)[0] for k, w in enumerate(windows)] == list(range(8))
    assert postprocess_defaults("official", 0.4) == {"score_threshold": 0.4, "joint_threshold": 0.0}
    assert postprocess_defaults("nms_free", 0.3) == {"score_threshold": 0.3}
    official = WindowLinker(LinkerConfig(**postprocess_defaults("official", 0.4)))
    assert [official.update(k, w)[0] for k, w in enumerate(windows)] == [0] * 8


@pytest.mark.parametrize("mode, tracker, expected", [
    ("official", None, 0.0), ("nms_free", None, 0.1), ("official", "joint_threshold: 0.2\n", 0.2)])
def test_the_estimator_takes_the_joint_threshold_from_the_post_processing(tmp_path, mode, tracker, expected):
    import dataclasses

    from pavenet.config import load_config
    from pavenet.infer.estimator import PoseEstimator
    from pavenet.model import build_model

    cfg = load_config("configs/pavenet_tiny.yaml", [f"postprocess.mode={mode}", "postprocess.score_threshold=0.35"])
    kwargs = {}
    if tracker is not None:
        (tmp_path / "tracker.yaml").write_text(tracker)
        kwargs["tracker"] = tmp_path / "tracker.yaml"
    est = PoseEstimator.from_config(build_model(cfg.model), cfg, device="cpu", **kwargs)
    assert est.linker_cfg == dataclasses.replace(LinkerConfig(), score_threshold=0.35, joint_threshold=expected)


@pytest.mark.parametrize("mode, expected", [("official", 0.0), ("nms_free", 0.1)])
def test_an_estimator_built_directly_takes_the_joint_threshold_of_its_post_processor(mode, expected):
    from pavenet.config import load_config
    from pavenet.infer.estimator import PoseEstimator
    from pavenet.model import build_model
    from pavenet.model.postprocess import PostProcessor

    model = build_model(load_config("configs/pavenet_tiny.yaml").model)
    est = PoseEstimator(model, PostProcessor(mode=mode), 64, 64, device="cpu")
    assert est.linker_cfg == LinkerConfig(joint_threshold=expected)
