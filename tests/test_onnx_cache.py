"""The ONNX streaming pairs exported from a checkpoint are cached per checkpoint content, input
size, opset and pavenet version (issue 25, item 6): a second use does not export again."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pavenet import __version__
from pavenet.export import onnx_cache
from pavenet.export.onnx_cache import StreamingPairCache, cache_root, file_sha256
from pavenet.export.onnx_export import streaming_paths


class FakeExporter:
    """Writes two small files where ``export_streaming`` writes the pair; counts the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, model, cfg, out: Path, opts) -> tuple[Path, Path]:
        self.calls.append((opts.height, opts.width))
        assert opts.dynamic_batch and opts.opset == 18
        pair = streaming_paths(out)
        for path, kind in zip(pair, ("encoder", "decoder")):
            path.write_text(f"{kind} {opts.height}x{opts.width}")
        return pair


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    path = tmp_path / "ckpt" / "model.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"weights v1")
    return path


def _cache(checkpoint: Path, root: Path, exporter: FakeExporter, lines: list[str]) -> StreamingPairCache:
    return StreamingPairCache(checkpoint, model=None, cfg=None, root=root, exporter=exporter, log=lines.append)


def test_second_use_of_a_checkpoint_and_size_loads_the_cached_pair(tmp_path, checkpoint):
    root, exporter, lines = tmp_path / "cache", FakeExporter(), []
    first = _cache(checkpoint, root, exporter, lines)
    encoder, decoder = first((96, 128))
    assert exporter.calls == [(96, 128)]
    assert encoder.read_text() == "encoder 96x128" and decoder.read_text() == "decoder 96x128"
    sha = file_sha256(checkpoint)
    assert encoder.parent == root / f"{sha[:16]}-96x128-opset18-pavenet{__version__}"
    key = json.loads((encoder.parent / "key.json").read_text())
    assert key["sha256"] == sha and key["input_size"] == [96, 128] and key["pavenet"] == __version__
    assert key["files"] == {encoder.name: encoder.stat().st_size, decoder.name: decoder.stat().st_size}
    assert lines[0].startswith("ONNX: exporting the streaming pair for a 96x128 (H x W) network input")
    assert lines[1].startswith("ONNX: exported in ") and lines[1].endswith(" s")

    again = _cache(checkpoint, root, exporter, lines)  # a later run, same checkpoint and size
    assert again((96, 128)) == (encoder, decoder)
    assert exporter.calls == [(96, 128)]
    assert lines[-1].startswith("ONNX: using the cached streaming pair for a 96x128 input")
    again((64, 64))  # another size: its own entry
    assert exporter.calls == [(96, 128), (64, 64)]
    assert sorted(p.name for p in root.iterdir()) == sorted(
        f"{sha[:16]}-{s}-opset18-pavenet{__version__}" for s in ("96x128", "64x64"))


def test_a_changed_checkpoint_is_exported_again(tmp_path, checkpoint):
    root, exporter, lines = tmp_path / "cache", FakeExporter(), []
    old = _cache(checkpoint, root, exporter, lines)((96, 128))
    checkpoint.write_bytes(b"weights v2")  # retrained at the same path
    new = _cache(checkpoint, root, exporter, lines)((96, 128))
    assert exporter.calls == [(96, 128), (96, 128)]
    assert new[0].parent != old[0].parent and old[0].is_file()


def test_a_damaged_entry_is_exported_again(tmp_path, checkpoint):
    root, exporter, lines = tmp_path / "cache", FakeExporter(), []
    encoder, decoder = _cache(checkpoint, root, exporter, lines)((64, 64))
    decoder.write_text("truncated")
    assert _cache(checkpoint, root, exporter, lines)((64, 64)) == (encoder, decoder)
    assert len(exporter.calls) == 2 and decoder.read_text() == "decoder 64x64"
    (encoder.parent / "key.json").unlink()
    _cache(checkpoint, root, exporter, lines)((64, 64))
    assert len(exporter.calls) == 3


def test_a_failed_export_leaves_no_entry(tmp_path, checkpoint):
    def broken(model, cfg, out, opts):
        streaming_paths(out)[0].write_text("half")
        raise RuntimeError("exporter failed")

    root = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="exporter failed"):
        StreamingPairCache(checkpoint, None, None, root=root, exporter=broken, log=lambda _: None)((64, 64))
    assert list(root.iterdir()) == []


def test_an_unwritable_cache_falls_back_to_a_temporary_folder(tmp_path, checkpoint):
    root, exporter, lines = tmp_path / "cache", FakeExporter(), []
    root.write_text("a file where the cache folder should be")  # unwritable for root as well
    cache = _cache(checkpoint, root, exporter, lines)
    encoder, decoder = cache((64, 64))
    assert encoder.read_text() == "encoder 64x64" and root not in encoder.parents
    assert any(line.startswith(f"ONNX: cannot write the cache {root}") for line in lines)
    assert cache((64, 64)) == (encoder, decoder) and exporter.calls == [(64, 64)]  # kept for this process


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PAVENET_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("PAVENET_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "pavenet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "pavenet"


@pytest.mark.slow
def test_from_checkpoint_exports_once_and_the_cached_pair_gives_the_same_output(tmp_path, monkeypatch):
    """Real exports of the small test network: the second network loads the cached pair."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from cli_helpers import CONFIG, SMALL
    from pavenet.config import config_to_dict, load_config
    from pavenet.export.onnx_runtime import OnnxRuntimeNetwork
    from pavenet.model import build_model
    from pavenet.runtime.checkpoint import save_checkpoint

    cfg = load_config(CONFIG, SMALL)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "run", 0, build_model(cfg.model).state_dict(),
                           {"config": config_to_dict(cfg), "step": 0})
    monkeypatch.setenv("PAVENET_CACHE", str(tmp_path / "cache"))
    calls = []
    real = onnx_cache.export_streaming
    monkeypatch.setattr(onnx_cache, "export_streaming", lambda *a: calls.append(a[3]) or real(*a))
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 64, 64, dtype=torch.bool)
    first = OnnxRuntimeNetwork.from_checkpoint(ckpt).encode(images, mask)
    second = OnnxRuntimeNetwork.from_checkpoint(ckpt).encode(images, mask)
    assert len(calls) == 1 and (calls[0].height, calls[0].width) == (64, 64)
    np.testing.assert_array_equal(first.memory.numpy(), second.memory.numpy())
    assert len(list((tmp_path / "cache" / "onnx").iterdir())) == 1
