"""Optional int8 copies of the streaming ONNX pair (dynamic quantisation, CPU).

ONNX Runtime's dynamic quantisation (``onnxruntime.quantization.quantize_dynamic``) stores the
weights of the matrix products (``MatMul``, ``Gemm``) as int8 and quantises their inputs per
call; convolutions, attention sampling and every other operator stay float32 (ONNX Runtime's
``ConvInteger`` is slower on the CPU than its float convolution). The ``pavenet.*`` metadata of
each file is kept, so a quantised pair loads like a float one (``PoseEstimator.from_onnx``).

``pavenet export --int8`` writes ``NAME.int8.encoder.onnx`` / ``NAME.int8.decoder.onnx`` next to
the float pair; ``pavenet bench onnx --int8`` measures its speed and its keypoint difference.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

from pavenet.export.onnx_export import streaming_paths
from pavenet.runtime.files import atomic_path

#: operators whose weights are stored as int8
QUANTIZED_OPS = ("MatMul", "Gemm")


def int8_path(out: str | Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx``: the name whose streaming pair holds the int8 copies."""
    out = Path(out)
    return out.with_name(out.stem + ".int8" + out.suffix)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantiser logs advice (optional pre-processing of the float graph) on the
    root logger at WARNING level on every call; muted here. The int8 graphs are checked against
    the float ones by the tests and by ``pavenet bench onnx --int8``."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_graph(source: Path, target: Path) -> Path:
    """Write the dynamically quantised copy of the ONNX file ``source`` to ``target`` (atomically);
    the quantiser keeps ``source``'s metadata (``tests/test_onnx.py`` checks it)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ImportError("int8 quantisation needs ONNX Runtime: pip install 'pavenet[onnx]'") from exc
    with atomic_path(target, suffix=".onnx") as tmp, _quiet_root_logger():
        quantize_dynamic(source, tmp, op_types_to_quantize=list(QUANTIZED_OPS), weight_type=QuantType.QInt8)
    return target


def quantize_streaming(out: str | Path) -> tuple[Path, Path]:
    """The int8 copies of the streaming pair of ``out`` (see :func:`int8_path`)."""
    pairs = zip(streaming_paths(out), streaming_paths(int8_path(out)))
    encoder, decoder = (quantize_graph(src, dst) for src, dst in pairs)
    return encoder, decoder
