"""The on-disk cache of the ONNX streaming pairs exported from checkpoints.

``pavenet predict --backend onnxruntime --weights CKPT`` (:meth:`OnnxRuntimeNetwork.from_checkpoint
<pavenet.export.onnx_runtime.OnnxRuntimeNetwork.from_checkpoint>`) needs the encoder/decoder pair
of every network input size it meets; exporting one takes tens of seconds. The pair is exported
once and kept in::

    <cache root>/onnx/<sha256 of the checkpoint file, 16 hex digits>-<H>x<W>-opset<N>-pavenet<version>/
        model.encoder.onnx  model.decoder.onnx  key.json

The cache root is ``$PAVENET_CACHE``, else ``$XDG_CACHE_HOME/pavenet``, else ``~/.cache/pavenet``.
The key is the checkpoint file's content (the weights and the stored config), the input size, the
opset and the pavenet version (whose network code the graphs hold), so a retrained or converted
checkpoint, even at the same path, gets its own entry. An entry is written under a temporary name
and renamed into place when complete (:func:`pavenet.runtime.files.atomic_dir`); ``key.json``
records the file sizes, and an entry whose files do not match them is exported again. Entries are
never removed by pavenet: delete the folder to reclaim the space. When the cache root cannot be
written, the pair goes to a temporary folder for this process, with a note.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from torch import nn
from tqdm import tqdm

from pavenet import __version__
from pavenet.config import Config
from pavenet.export.onnx_export import DEFAULT_OPSET, ExportOptions, export_streaming, streaming_paths
from pavenet.runtime.files import atomic_dir, atomic_write_json, remove_stale

Size = tuple[int, int]
#: ``export_streaming``'s signature: (model, cfg, out, options) -> (encoder path, decoder path)
StreamingExporter = Callable[[nn.Module, Config, Path, ExportOptions], tuple[Path, Path]]
#: environment variable naming the cache root
CACHE_ENV = "PAVENET_CACHE"
#: hex digits of the checkpoint's sha256 in an entry's folder name
KEY_DIGITS = 16


def cache_root() -> Path:
    """``$PAVENET_CACHE``, else ``$XDG_CACHE_HOME/pavenet``, else ``~/.cache/pavenet``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "pavenet"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


class StreamingPairCache:
    """Exports and caches the streaming pair of one checkpoint, one entry per input size.

    Called with a size ``(H, W)`` it returns ``(encoder, decoder)`` paths: the cached ones, or
    those of a fresh export (announced with a line before and one with the time after). It is
    the ``exporter`` of :class:`pavenet.export.onnx_runtime.OnnxRuntimeNetwork`.
    """

    def __init__(self, checkpoint: str | Path, model: nn.Module, cfg: Config, root: Optional[Path] = None,
                 opset: int = DEFAULT_OPSET, exporter: Optional[StreamingExporter] = None,
                 log: Callable[[str], None] = _log) -> None:
        self.checkpoint, self.model, self.cfg = Path(checkpoint), model, cfg
        self.root = Path(root) if root is not None else cache_root() / "onnx"
        self.opset, self.log = opset, log
        self._exporter = exporter
        self.sha256 = file_sha256(self.checkpoint)
        self._fallback: Optional[tempfile.TemporaryDirectory] = None  # when the root is not writable

    def folder(self, size: Size) -> Path:
        """The entry folder of ``size`` (H, W) in the cache root."""
        h, w = size
        return self.root / f"{self.sha256[:KEY_DIGITS]}-{h}x{w}-opset{self.opset}-pavenet{__version__}"

    def key(self, size: Size) -> dict[str, Any]:
        """What an entry was exported from (written as its ``key.json``)."""
        return {"checkpoint": str(self.checkpoint), "sha256": self.sha256, "input_size": list(size),
                "opset": self.opset, "pavenet": __version__}

    def __call__(self, size: Size) -> tuple[Path, Path]:
        folder = self.folder(size)
        if _complete(folder):
            self.log(f"ONNX: using the cached streaming pair for a {size[0]}x{size[1]} input ({folder})")
            return streaming_paths(folder / "model.onnx")
        try:
            return self._export_into_cache(size, folder)
        except OSError as exc:  # an unwritable cache root: this process's temporary folder
            if self._fallback is None:
                self._fallback = tempfile.TemporaryDirectory(prefix="pavenet-onnx-")
            temporary = Path(self._fallback.name) / folder.name
            if _complete(temporary):
                return streaming_paths(temporary / "model.onnx")
            self.log(f"ONNX: cannot write the cache {self.root} ({exc.strerror or exc}); "
                     "exporting into a temporary folder")
            return self._export(size, temporary)

    def _export_into_cache(self, size: Size, folder: Path) -> tuple[Path, Path]:
        if folder.exists():  # incomplete or damaged: export again
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(folder.parent)  # what killed exports left
        try:
            with atomic_dir(folder) as tmp:
                self._export(size, tmp)
        except OSError:
            if not _complete(folder):  # another process may have just written the same entry
                raise
        return streaming_paths(folder / "model.onnx")

    def _export(self, size: Size, folder: Path) -> tuple[Path, Path]:
        """Export into ``folder`` (created), then write ``key.json`` with the file sizes."""
        folder.mkdir(parents=True, exist_ok=True)
        self.log(f"ONNX: exporting the streaming pair for a {size[0]}x{size[1]} (H x W) network input "
                 f"(first use of this checkpoint at this size; kept in {folder.parent}) ...")
        start = time.perf_counter()
        exporter = self._exporter or export_streaming
        opts = ExportOptions(*size, opset=self.opset, dynamic_batch=True)
        pair = exporter(self.model, self.cfg, folder / "model.onnx", opts)
        pair = tuple(Path(p) for p in pair)
        sizes = {p.name: p.stat().st_size for p in pair}
        atomic_write_json(folder / "key.json", {**self.key(size), "files": sizes})
        self.log(f"ONNX: exported in {time.perf_counter() - start:.1f} s")
        return pair


def _complete(folder: Path) -> bool:
    """Whether ``folder`` holds a pair whose file sizes are those its ``key.json`` records."""
    try:
        key = json.loads((folder / "key.json").read_text(encoding="utf-8"))
        files = key["files"]
        pair = streaming_paths(folder / "model.onnx")
        return (isinstance(files, dict) and sorted(files) == sorted(p.name for p in pair)
                and all(p.stat().st_size == files[p.name] for p in pair))
    except (OSError, ValueError, KeyError, TypeError):
        return False
