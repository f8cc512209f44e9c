"""``CompiledNetwork`` (``PoseEstimator(compile=...)``, ``pavenet predict --compile``) and the
copies that keep outputs safe from CUDA-graph replays.

On CPU the network is compiled with Dynamo's ``backend="eager"`` (no C++ compiler needed): the
captured graphs must give the eager network's outputs, through the estimator too.
"""
import numpy as np
import pytest
import torch

from test_predict import tiny, video  # noqa: F401 (fixtures)

from pavenet.cli import main
from pavenet.infer import compiled as compiled_module
from pavenet.infer.compiled import CompiledNetwork, copy_outputs
from pavenet.infer.estimator import PoseEstimator
from pavenet.model.encoder import FrameMemory


def test_copy_outputs_copies_every_tensor_of_nested_outputs():
    memory = FrameMemory(torch.randn(2, 5, 4), torch.tensor([[1, 5]]), torch.tensor([0]),
                         torch.rand(2, 1, 2), torch.zeros(2, 5, dtype=torch.bool), ((1, 5),))
    outputs = {"memory": memory, "aux": [{"a": torch.arange(3)}, (torch.ones(2), "name")], "k": 7}
    copied = copy_outputs(outputs)
    assert copied["k"] == 7 and copied["aux"][1][1] == "name"
    assert isinstance(copied["memory"], FrameMemory) and copied["memory"].shapes == ((1, 5),)
    pairs = [(memory.memory, copied["memory"].memory), (memory.padding_mask, copied["memory"].padding_mask),
             (outputs["aux"][0]["a"], copied["aux"][0]["a"]), (outputs["aux"][1][0], copied["aux"][1][0])]
    for original, copy in pairs:
        assert torch.equal(original, copy) and original.data_ptr() != copy.data_ptr()
    memory.memory.zero_()
    assert copied["memory"].memory.abs().sum() > 0


def test_compiled_network_matches_the_eager_network(tiny):  # noqa: F811
    cfg, model, _ = tiny
    torch._dynamo.reset()
    net = CompiledNetwork(model, backend="eager")
    assert net.num_frames == model.num_frames and not net.graphs
    frames = torch.randn(2 * model.num_frames, 3, 64, 96)
    mask = torch.zeros(2 * model.num_frames, 64, 96, dtype=torch.bool)
    with torch.no_grad():
        expected = model.decode(model.encode(frames, mask), 2)
        got = net.decode(net.encode(frames, mask), 2)
    assert set(got) == set(expected)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="compile mode"):
        CompiledNetwork(model, mode="fastest")


def test_estimator_with_compile_gives_the_eager_predictions(tiny, video, monkeypatch):  # noqa: F811
    cfg, model, post = tiny
    _, frames = video
    eager_compile = torch.compile
    monkeypatch.setattr(compiled_module.torch, "compile",
                        lambda fn, backend, **options: eager_compile(fn, backend="eager"))
    torch._dynamo.reset()
    runs = {}
    for mode in (None, "reduce-overhead"):
        est = PoseEstimator(model, post, 64, 96, device="cpu", compile=mode)
        assert isinstance(est.model, CompiledNetwork) == (mode is not None)
        runs[mode] = list(est.predict_frames(iter(frames[:7]), batch_size=2, score_threshold=0.0))
    assert [[p.track_id for p in f.people] for f in runs[None]] == \
        [[p.track_id for p in f.people] for f in runs["reduce-overhead"]]
    for a, b in zip(runs[None], runs["reduce-overhead"]):
        np.testing.assert_allclose(np.stack([p.keypoints for p in a.people]),
                                   np.stack([p.keypoints for p in b.people]), rtol=0, atol=1e-3)


def test_predict_refuses_amp_and_compile_with_onnxruntime(tmp_path, capsys):
    code = main(["predict", str(tmp_path), "--weights", str(tmp_path / "model.onnx"),
                 "--backend", "onnxruntime", "--compile"])
    assert code == 2
    assert "pytorch backend only" in capsys.readouterr().err
