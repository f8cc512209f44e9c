"""`pavenet test --layer-report`: where each stage of PAVE-Net puts the joints."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from pavenet.cli import main
from pavenet.config import load_config
from pavenet.data.build import load_split
from pavenet.engine.layer_report import follow_person, layer_report, person_ratios, stage_keypoints
from pavenet.model import build_model

SMALL = ["model.hidden_dim=32", "model.num_heads=2", "model.enc_layers=1", "model.ffn_dim=64",
         "model.num_queries=8", "model.num_kept=4", "model.pose_dec_layers=2", "model.joint_dec_layers=2",
         "model.refine_hidden=[32]", "model.embed_dim=16", "model.backbone.name=resnet10t",
         "data.test_short_side=64", "data.test_max_size=64"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(load_config("synthetic_tiny", SMALL).model).eval()


def _perturbed(model):
    """A copy whose refinement heads are no longer zero (every stage then moves the joints)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(param.numel())))
    return model


def test_follow_person_takes_the_least_mean_distance_over_annotated_joints() -> None:
    truth = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    annotated = np.array([True, True, False])
    final = np.array([
        [[3.0, 4.0], [13.0, 4.0], [20.0, 0.0]],     # mean 5 over the annotated joints
        [[0.0, 1.0], [10.0, 2.0], [900.0, 900.0]],  # mean 1.5; far only on the unannotated joint
        [[0.0, 2.0], [10.0, 1.0], [20.0, 0.0]],     # mean 1.5 too: a tie, the first one wins
    ])
    assert follow_person(final, truth, annotated) == 1


def test_person_ratios_by_hand() -> None:
    truth = np.array([[0.0, 0.0], [10.0, 10.0]])
    stages = {"a": np.array([[[0.0, 0.0], [0.0, 0.0]], [[3.0, 4.0], [10.0, 10.0]]]),
              "b": np.array([[[0.0, 0.0], [0.0, 0.0]], [[6.0, 8.0], [10.0, 12.5]]])}
    got = person_ratios(stages, 1, truth, np.array([True, True]), radius=2.5)
    np.testing.assert_allclose(got["a"], [2.0, 0.0])
    np.testing.assert_allclose(got["b"], [4.0, 1.0])
    only_second = person_ratios(stages, 1, truth, np.array([False, True]), radius=2.5)
    np.testing.assert_allclose(only_second["b"], [1.0])


def test_stages_of_a_fresh_network_equal_its_proposals(tiny) -> None:
    """The refinement heads start at zero: every stage returns the proposals (round trip through
    sigmoid and logit); the last stage is the network's output."""
    frames = torch.randn(2, 3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 64, 64, dtype=torch.bool)
    stages, kept = stage_keypoints(tiny, frames, mask)
    assert list(stages) == ["proposal", "pose decoder 0", "pose decoder 1", "joint decoder 0", "joint decoder 1"]
    with torch.no_grad():
        out = tiny(frames, mask)
    assert torch.equal(stages["joint decoder 1"], out["keypoints"]) and torch.equal(kept, out["kept_index"])
    assert stages["proposal"].shape == out["keypoints"].shape == (2, 8, 3, 15, 2)
    for name, kp in stages.items():
        torch.testing.assert_close(kp, stages["proposal"], atol=1e-5, rtol=0, msg=name)
    assert len(tiny.pose_decoder._forward_pre_hooks) == 0  # the hook is gone


def test_stages_of_a_trained_network_differ(tiny) -> None:
    model = _perturbed(tiny)
    frames = torch.randn(1, 3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    stages, kept = stage_keypoints(model, frames, torch.zeros(1, 64, 64, dtype=torch.bool))
    values = list(stages.values())
    for before, after in zip(values[:3], values[1:4]):
        assert (after - before).abs().max() > 1e-3
    rest = torch.ones(8, dtype=torch.bool)
    rest[kept[0]] = False  # the joint decoder leaves the queries it does not refine alone
    assert torch.equal(stages["joint decoder 1"][0, rest], stages["pose decoder 1"][0, rest])


@pytest.mark.slow
def test_layer_report_on_a_synthetic_split(tmp_path, tiny) -> None:
    from pavenet.data.synthetic import write_dataset
    from pavenet.infer.estimator import PoseEstimator

    write_dataset(tmp_path, videos=0, val_videos=2, frames=4, size=(64, 64), seed=3)
    cfg = load_config("synthetic_tiny", [*SMALL, f"data.root={tmp_path}"])
    est = PoseEstimator.from_config(tiny, cfg, device="cpu")
    report = layer_report(est, cfg, "val")
    frames = [f for seq in load_split(cfg.data, "val") for f in seq.frames if f.is_labeled]
    people = [p for f in frames for p in f.persons if p.bbox_head is not None]
    assert report["people"] == len(people) > 0
    assert report["joints"] == sum(int((p.keypoints[:, 2] > 0).sum()) for p in people)
    first = report["stages"]["proposal"]
    assert 0.0 <= first["within_radius"] <= 1.0 and first["median_ratio"] > 0
    for stage in report["stages"].values():  # a fresh network: no stage moves the joints
        assert stage == pytest.approx(first, abs=1e-6)


@pytest.mark.slow
def test_test_command_writes_the_layer_report(tmp_path, tiny, capsys) -> None:
    from pavenet.config import config_to_dict
    from pavenet.data.synthetic import write_dataset
    from pavenet.infer.estimator import PoseEstimator
    from pavenet.runtime.checkpoint import save_checkpoint

    data = tmp_path / "data"
    cfg = load_config("synthetic_tiny", [*SMALL, f"data.root={data}"])
    model = _perturbed(tiny)
    ckpt = save_checkpoint(tmp_path / "run", 0, model.state_dict(), {"config": config_to_dict(cfg), "step": 0})
    write_dataset(data, videos=0, val_videos=1, frames=4, size=(64, 64), seed=5)
    out = tmp_path / "test"
    args = ["test", "synthetic_tiny", "--weights", str(ckpt), "--device", "cpu", "--threads", "1",
            "--layer-report", "--out", str(out), "--set", *SMALL, f"data.root={data}"]
    assert main(args) == 0
    report = json.loads((out / "layer_report.json").read_text())
    want = layer_report(PoseEstimator.from_config(model, cfg, device="cpu"), cfg, "val")
    assert report == json.loads(json.dumps(want)) and report["people"] > 0
    assert "within PCKh radius" in capsys.readouterr().out
    vepe = ["test", "vepe_tiny", "--weights", str(ckpt), "--layer-report", "--out", str(tmp_path / "v"),
            "--set", f"data.root={data}"]
    assert main(vepe) == 2
    assert "follows PAVE-Net's stages" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()
