"""The package as a user meets it: the public API, configs by name from anywhere, export
without a config (issue 23, items 4 and 6)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pavenet
from pavenet.config import CONFIG_DIR, ConfigError, config_names, config_path, config_to_dict, load_config

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_import_pavenet_is_light_and_exports_the_api() -> None:
    code = ("import sys, pavenet; assert 'torch' not in sys.modules, 'torch loaded'; "
            "from pavenet import PoseEstimator, load_config, build; "
            "from pavenet.infer.estimator import PoseEstimator as P; from pavenet.model import build as b; "
            "from pavenet.config import load_config as l; "
            "assert (PoseEstimator, build, load_config) == (P, b, l); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
    assert {"PoseEstimator", "load_config", "build"} <= set(pavenet.__all__) == set(dir(pavenet))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        pavenet.nothing  # noqa: B018


def test_shipped_configs_are_in_the_package_and_the_repository_folder_is_the_same() -> None:
    assert CONFIG_DIR.parent == Path(pavenet.__file__).resolve().parent
    names = config_names()
    assert {"synthetic_tiny", "pavenet_r50", "vepe_tiny", "posetrack18_r50"} <= set(names)
    assert sorted(p.stem for p in REPO_CONFIGS.glob("*.yaml")) == names
    for name in names:  # every shipped config loads and validates (bases resolved in the package)
        assert load_config(name).model.num_joints == 15


def test_a_config_loads_by_name_from_any_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    by_name = load_config("posetrack18_r50", ["model.num_frames=1"])
    assert by_name == load_config("posetrack18_r50.yaml", ["model.num_frames=1"])
    assert by_name == load_config(CONFIG_DIR / "posetrack18_r50.yaml", ["model.num_frames=1"])
    assert by_name.model.num_frames == 1 and by_name.data.dataset == "posetrack18"
    assert config_path("pavenet_r50") == CONFIG_DIR / "pavenet_r50.yaml"
    own = tmp_path / "pavenet_r50.yaml"  # a file of the user's with a shipped name wins
    own.write_text("model:\n  num_frames: 5\n")
    assert config_path("pavenet_r50.yaml") == Path("pavenet_r50.yaml")
    assert load_config("pavenet_r50.yaml").model.num_frames == 5
    assert load_config("pavenet_r50").model.num_frames == 3


def test_an_unknown_config_names_the_shipped_ones_and_the_closest(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"pavenet_r5: config file not found.*synthetic_tiny.*"
                                          r"did you mean 'pavenet_r50'\?"):
        load_config("pavenet_r5")
    with pytest.raises(ConfigError, match=r"vepe_tiny.yaml: config file not found \(the shipped config of "
                                          r"that name is 'vepe_tiny'\)"):
        load_config(tmp_path / "configs" / "vepe_tiny.yaml")


@pytest.mark.slow
def test_export_takes_the_config_from_the_checkpoint(tmp_path) -> None:
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnx")
    from pavenet.cli import main
    from pavenet.export.onnx_export import read_onnx_metadata
    from pavenet.model import build_model
    from pavenet.runtime.checkpoint import save_checkpoint

    cfg = load_config("synthetic_tiny", ["model.num_frames=1", "model.num_queries=12", "model.num_kept=4"])
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ckpt", 0, build_model(cfg.model).state_dict(),
                    {"config": config_to_dict(cfg), "step": 0})
    stored, changed = tmp_path / "stored.onnx", tmp_path / "changed.onnx"
    common = ["--weights", str(tmp_path / "ckpt"), "--size", "64", "64", "--graphs", "clip"]
    assert main(["export", *common, "--out", str(stored)]) == 0
    assert read_onnx_metadata(stored)["config"] == config_to_dict(cfg)
    assert main(["export", *common, "--out", str(changed), "--set", "postprocess.top_k=3"]) == 0
    assert read_onnx_metadata(changed)["config"]["postprocess"]["top_k"] == 3
    assert read_onnx_metadata(changed)["config"]["model"] == config_to_dict(cfg)["model"]
