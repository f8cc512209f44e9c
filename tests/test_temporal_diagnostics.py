"""Diagnostics of the temporal claim (issue 24): attention share per frame, AP per frame subset."""
from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import pytest
import torch

from eval_builders import base_pose, gt_person, image, pred_person, write_sequence
from pavenet.cli import main
from pavenet.config import load_config
from pavenet.data.joints import EVAL_GROUPS, MODEL
from pavenet.eval.frame_subsets import degradation_subsets, evaluate_frame_subsets
from pavenet.eval.posetrack import POSEVAL_JOINTS, evaluate_posetrack, format_ap_rows
from pavenet.model import build_model
from pavenet.model.attention_probe import FrameAttentionProbe
from pavenet.model.pose_attention import FrameDeformAttn

SMALL = ["model.hidden_dim=32", "model.num_heads=2", "model.enc_layers=1", "model.ffn_dim=64",
         "model.num_queries=8", "model.num_kept=4", "model.pose_dec_layers=2", "model.joint_dec_layers=1",
         "model.refine_hidden=[32]", "model.embed_dim=16", "model.backbone.name=resnet10t"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(load_config("synthetic_tiny", SMALL).model).eval()


def _run(model) -> FrameAttentionProbe:
    frames = torch.randn(2, 3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), FrameAttentionProbe(model) as probe:
        model(frames, torch.zeros(2, 64, 64, dtype=torch.bool))
    return probe


def _perturbed(model):
    """A copy of ``model`` with every parameter moved by seeded noise: the attention no longer
    uniform over the frames, the decoders no longer at their zero start."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(param.numel())))
    return model


def test_fresh_attention_is_uniform_over_frames(tiny) -> None:
    probe = _run(tiny)
    names = [n for n, m in tiny.named_modules() if isinstance(m, FrameDeformAttn)]
    assert set(probe.shares) == set(names) and len(names) == 3  # 2 pose-decoder + 1 joint-decoder layers
    for name, calls in probe.shares.items():
        assert len(calls) == 1
        share = calls[0]
        assert share.shape[0] == 2 and share.shape[2] == 3
        torch.testing.assert_close(share, torch.full_like(share, 1 / 3))  # zero-initialised logits
    assert "sampling" not in vars(tiny.pose_decoder.layers[0].cross_attn)  # unwrapped on exit


def test_share_follows_the_attention_logits_by_hand(tiny) -> None:
    attn = tiny.pose_decoder.layers[1].cross_attn
    bias = attn.attention_weights.bias
    with torch.no_grad():
        saved = bias.clone()
        bias.view(attn.num_frames, -1)[0] = math.log(3.0)  # every logit of frame 0 is ln 3 higher
        try:
            probe = _run(tiny)
        finally:
            bias.copy_(saved)
    share = probe.shares["pose_decoder.layers.1.cross_attn"][0]
    expected = torch.tensor([3.0, 1.0, 1.0]) / 5.0  # the same number of points per frame
    torch.testing.assert_close(share, expected.expand_as(share))
    torch.testing.assert_close(probe.shares["pose_decoder.layers.0.cross_attn"][0].sum(-1),
                               torch.ones(2, share.shape[1]))


def _half_found(root, degraded: bool = True, marks=None, found=(0, 1, 2)):
    """Frames 0-4 of one sequence with one person each; frames 3-4 marked degraded (when
    ``degraded``; ``marks``: {frame: kind} instead) and the ``found`` frames predicted 1 pixel
    off."""
    marks = ({3: "noise", 4: "noise"} if degraded else {}) if marks is None else marks
    images = [image(1, f, degradation=marks[f]) if f in marks else image(1, f) for f in range(5)]
    gt, pred = [], []
    for f, img in enumerate(images):
        xy = base_pose(60 + 4 * f, 80)
        gt.append(gt_person(img["id"], 1, xy))
        if f in found:
            pred.append(pred_person(img["id"], 1, xy + 1.0))
    return images, *write_sequence(root, "000001_mpii_test", images, gt, pred)


def test_key_frame_memory_repeats_each_clips_key_frame() -> None:
    from pavenet.model.encoder import FrameMemory
    from pavenet.model.key_frame_only import key_frame_memory

    rows = torch.arange(6.0)[:, None, None].expand(6, 4, 2)  # frame i's memory holds i
    memory = FrameMemory(rows, torch.tensor([[2, 2]]), torch.tensor([0]), torch.ones(6, 1, 2),
                         torch.zeros(6, 4, dtype=torch.bool), ((2, 2),))
    got = key_frame_memory(memory, batch=2, num_frames=3, key_frame=1)
    assert got.memory[:, 0, 0].tolist() == [1, 1, 1, 4, 4, 4]


def test_key_frame_only_decodes_the_key_frame_repeated(tiny) -> None:
    """Under KeyFrameOnly the clip (a, b, c) gives the outputs of (b, b, b) without it, and other
    outputs than (a, b, c) for a network whose neighbours matter; the class method is back after."""
    from pavenet.model.key_frame_only import KeyFrameOnly

    model = _perturbed(tiny)
    frames = torch.randn(2, 3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 64, 64, dtype=torch.bool)
    repeated = frames[:, 1:2].expand_as(frames).contiguous()
    with torch.no_grad():
        normal, want = model(frames, mask), model(repeated, mask)
        with KeyFrameOnly(model):
            got = model(frames, mask)
    for key in ("logits", "keypoints"):
        torch.testing.assert_close(got[key], want[key])
        assert not torch.allclose(got[key], normal[key])
    assert "decode" not in vars(model)
    with pytest.raises(TypeError, match="KeyFrameOnly needs a clip network"):
        KeyFrameOnly(torch.nn.Linear(2, 2))


def test_ap_of_frame_subsets_against_the_full_evaluation(tmp_path) -> None:
    """Perfect predictions on frames 0-2, none on frames 3-4: AP 100 on the first subset, 0 on
    the second; the union's AP equals the full evaluation's."""
    images, gt_dir, pred_dir = _half_found(tmp_path)
    subsets = degradation_subsets(gt_dir)
    assert subsets == {"degraded": {images[3]["id"], images[4]["id"]},
                       "clean": {img["id"] for img in images[:3]},
                       "degraded: noise": {images[3]["id"], images[4]["id"]}}
    result = evaluate_frame_subsets(gt_dir, pred_dir, {**subsets, "all": subsets["clean"] | subsets["degraded"]})
    assert result["clean"]["frames"] == 3 and result["degraded"]["frames"] == 2
    assert result["clean"]["ap"]["total"] == pytest.approx(100.0)
    assert result["degraded"]["ap"]["total"] == pytest.approx(0.0)
    full = evaluate_posetrack(gt_dir, pred_dir, tracking=False)["ap"]
    assert result["all"]["ap"] == pytest.approx(full)
    assert np.isclose(full["total"], 60.0)  # 3 of 5 people found, all at precision 1


@pytest.mark.slow
def test_attention_to_neighbours_on_a_temporal_split(tmp_path, tiny) -> None:
    from pavenet.data.synthetic import write_dataset
    from pavenet.engine.temporal_report import attention_to_neighbours
    from pavenet.infer.estimator import PoseEstimator

    write_dataset(tmp_path, videos=0, val_videos=2, frames=8, size=(64, 64), difficulty="temporal", seed=3)
    cfg = load_config("synthetic_tiny", [*SMALL, f"data.root={tmp_path}", "data.test_short_side=64",
                                         "data.test_max_size=64"])
    est = PoseEstimator.from_config(tiny, cfg, device="cpu")
    report = attention_to_neighbours(est, cfg, "val")
    names = {n for n, m in tiny.named_modules() if isinstance(m, FrameDeformAttn)}
    assert set(report) == {"degraded", "clean"} and set(report["clean"]) == names == set(report["degraded"])
    for group in report.values():  # uniform attention at initialisation: 2 of 3 frames are neighbours
        for share in group.values():
            assert share == pytest.approx(2 / 3, abs=1e-5)


def test_format_ap_rows_groups_the_joints_as_the_official_table() -> None:
    ap = {name: 10.0 * i for i, name in enumerate(POSEVAL_JOINTS)}
    ap["total"] = 42.0
    lines = format_ap_rows({"clean": ap, "x": {**ap, "total": None}}).splitlines()
    assert lines[0].split() == ["&", "Head", "&", "Shou", "&", "Elbo", "&", "Wris", "&", "Hip", "&", "Knee",
                                "&", "Ankl", "&", "Total", "\\\\"]
    head = np.mean([ap[MODEL.names[j]] for j in EVAL_GROUPS["Head"]])
    ankle = np.mean([ap[MODEL.names[j]] for j in EVAL_GROUPS["Ankle"]])
    cells = lines[1].split()
    assert cells[:3] == ["clean", "&", f"{head:.1f}"] and cells[-4] == f"{ankle:.1f}"
    assert cells[-2] == "42.0" and lines[2].split()[-2] == "-"


def test_ap_by_degradation_kind(tmp_path) -> None:
    """A noisy frame found, two dropped ones missed: AP 100 and 0 by kind; the degraded frames
    together: one of three people found at precision 1, AP 100/3."""
    from pavenet.eval.frame_subsets import ap_by_degradation

    images, gt_dir, pred_dir = _half_found(tmp_path, marks={2: "noise", 3: "dropped", 4: "dropped"})
    result = ap_by_degradation(gt_dir, pred_dir)
    assert list(result) == ["degraded", "clean", "all", "degraded: dropped", "degraded: noise"]
    assert {k: v["frames"] for k, v in result.items()} == {"degraded": 3, "clean": 2, "all": 5,
                                                             "degraded: dropped": 2, "degraded: noise": 1}
    assert result["degraded: noise"]["ap"]["total"] == pytest.approx(100.0)
    assert result["degraded: dropped"]["ap"]["total"] == pytest.approx(0.0)
    assert result["degraded"]["ap"]["total"] == pytest.approx(100.0 / 3)
    assert result["clean"]["ap"]["total"] == pytest.approx(100.0)


def test_eval_by_degradation_on_the_command_line(tmp_path, capsys) -> None:
    _, gt_dir, pred_dir = _half_found(tmp_path / "temporal")
    out = tmp_path / "metrics.json"
    assert main(["eval", str(gt_dir), str(pred_dir), "--by-degradation", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["by_degradation"]
    assert {k: v["frames"] for k, v in result.items()} == {"degraded": 2, "clean": 3, "all": 5, "degraded: noise": 2}
    assert result["clean"]["ap"]["total"] == pytest.approx(100.0)
    assert result["degraded"]["ap"]["total"] == pytest.approx(0.0)
    assert result["all"]["ap"]["total"] == pytest.approx(60.0)
    printed = capsys.readouterr().out
    assert re.search(r"^degraded \(2 frames\) +&", printed, re.M)
    assert re.search(r"^degraded: noise \(2 frames\) &", printed, re.M)
    _, gt_dir, pred_dir = _half_found(tmp_path / "plain", degraded=False)
    assert main(["eval", str(gt_dir), str(pred_dir), "--by-degradation"]) == 2
    assert f"{gt_dir}: no frame is marked with a degradation" in capsys.readouterr().err


@pytest.mark.slow
def test_test_command_writes_the_temporal_report(tmp_path, tiny, capsys) -> None:
    from pavenet.config import config_to_dict
    from pavenet.data.synthetic import write_dataset
    from pavenet.engine.temporal_report import attention_to_neighbours
    from pavenet.eval.frame_subsets import ap_by_degradation
    from pavenet.infer.estimator import PoseEstimator
    from pavenet.runtime.checkpoint import save_checkpoint

    sets = [*SMALL, "data.test_short_side=64", "data.test_max_size=64", "postprocess.score_threshold=0"]
    cfg = load_config("synthetic_tiny", [*sets, f"data.root={tmp_path / 'data'}"])
    model = _perturbed(tiny)
    ckpt = save_checkpoint(tmp_path / "run", 0, model.state_dict(), {"config": config_to_dict(cfg), "step": 0})
    write_dataset(tmp_path / "data", videos=0, val_videos=2, frames=6, size=(64, 64), difficulty="temporal", seed=3)
    out = tmp_path / "test"
    common = ["test", "synthetic_tiny", "--weights", str(ckpt), "--device", "cpu", "--threads", "1", "--exist-ok",
              "--temporal-report", "--set", *sets]
    assert main([*common, f"data.root={tmp_path / 'data'}", "--out", str(out)]) == 0
    report = json.loads((out / "temporal_report.json").read_text())
    gt_dir = tmp_path / "data" / "annotations" / "val"
    assert report["ap"] == json.loads(json.dumps(ap_by_degradation(gt_dir, out / "predictions")))
    want = attention_to_neighbours(PoseEstimator.from_config(model, cfg, device="cpu"), cfg, "val")
    assert set(report["attention_on_neighbours"]) == {"degraded", "clean"}
    for group, shares in report["attention_on_neighbours"].items():
        assert shares == pytest.approx(want[group]) and shares != pytest.approx(dict.fromkeys(shares, 2 / 3))
    printed = capsys.readouterr().out
    assert "on neighbours: degraded" in printed and "decoded from its key frame alone" in printed
    alone = out / "predictions_key_frame_only"
    assert report["ap_key_frame_only"] == json.loads(json.dumps(ap_by_degradation(gt_dir, alone)))
    assert sorted(p.name for p in alone.iterdir()) == sorted(p.name for p in (out / "predictions").iterdir())
    people = json.loads(next((out / "predictions").iterdir()).read_text())["annotations"]
    assert people and any((alone / p.name).read_text() != p.read_text() for p in (out / "predictions").iterdir())
    write_dataset(tmp_path / "plain", videos=0, val_videos=1, frames=4, size=(64, 64), seed=3)
    assert main([*common, f"data.root={tmp_path / 'plain'}", "--out", str(tmp_path / "plain_test")]) == 2
    assert "no frame is marked with a degradation" in capsys.readouterr().err
    assert not (tmp_path / "plain_test" / "predictions").exists()  # refused before predicting
