"""Hostile input to ``pavenet export`` and ``pavenet predict``: one line naming the problem and exit
code 2, checked before any work."""
from pathlib import Path

import pytest

from cli_helpers import CONFIG, SMALL, one_line
from pavenet.cli import main
from pavenet.config import config_to_dict, load_config
from pavenet.runtime.checkpoint import save_checkpoint
from pavenet.model import build_model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    cfg = load_config(CONFIG, SMALL)
    model = build_model(cfg.model)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), 0, model.state_dict(),
                           {"config": config_to_dict(cfg), "step": 0})


def test_export_refuses_an_opset_it_cannot_write(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", CONFIG, "--weights", str(tiny_checkpoint), "--out", str(out), "--opset", "99",
                 "--set", *SMALL]) == 2
    assert one_line(capsys, "export").startswith("pavenet export: error: --opset 99: the ONNX exporter writes "
                                                  "opsets 18 to ")
    assert not out.exists()


@pytest.mark.parametrize("option, value", [("--score-threshold", "5"), ("--score-threshold", "nan"),
                                           ("--joint-threshold", "-1"), ("--batch-size", "0")])
def test_predict_checks_numbers_when_parsing(option, value, tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(tmp_path), "--weights", str(tiny_checkpoint), option, value])
    assert exit_.value.code == 2
    assert f"argument {option}: expected " in capsys.readouterr().err


def test_predict_checks_out_before_any_inference(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "predictions"
    # the weights do not exist either: the output folder is checked first
    assert main(["predict", str(tmp_path), "--weights", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert one_line(capsys, "predict").startswith(f"pavenet predict: error: {out}: cannot write output files")


def test_predict_refuses_weights_that_are_not_finite(tiny_checkpoint, tmp_path, capsys):
    from pavenet.runtime.checkpoint import load_weights

    state, meta = load_weights(tiny_checkpoint)
    state = {k: v * float("nan") if v.is_floating_point() else v for k, v in state.items()}
    bad = save_checkpoint(tmp_path / "run", 0, state, meta)
    (tmp_path / "video").mkdir()
    assert main(["predict", str(tmp_path / "video"), "--weights", str(bad), "--out", str(tmp_path / "out"),
                 "--device", "cpu"]) == 2
    line = one_line(capsys, "predict")
    assert line.startswith(f"pavenet predict: error: {bad}: ") and "tensors hold NaN or infinite values" in line
