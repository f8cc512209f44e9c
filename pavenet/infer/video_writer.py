"""Write RGB frames to a video file with PyAV, atomically.

H.264 (libx264) is used when PyAV has it, otherwise the first available codec of
:data:`CODEC_PREFERENCE`. Frames are encoded into a temporary file next to the target, which is
renamed to the target name only when :meth:`VideoWriter.close` completes; on error the temporary
file is removed and no partial output is left behind. Frames of odd width or height are padded
by one pixel (bottom/right, edge replicated) because 4:2:0 codecs need even sizes.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pavenet.runtime.files import temp_path

#: Codecs tried in order; the first one PyAV can encode with is used.
CODEC_PREFERENCE = ("libx264", "h264", "mpeg4", "libvpx", "mjpeg")


def available_codec(preference: tuple[str, ...] = CODEC_PREFERENCE) -> str:
    """The first encoder of ``preference`` that this PyAV build provides."""
    for name in preference:
        try:
            av.codec.Codec(name, "w")
        except (av.codec.codec.UnknownCodecError, ValueError):
            continue
        return name
    raise RuntimeError(f"PyAV has none of the video encoders {list(preference)}")


class VideoWriter:
    """Encode (H, W, 3) uint8 RGB frames at a fixed frame rate into ``path``.

    The frame size is fixed by the first frame; a frame of another size raises ``ValueError``.
    Use as a context manager: a clean exit renames the temporary file to ``path``, an exception
    deletes it.
    """

    def __init__(self, path: str | Path, rate: Fraction | float | int, codec: str | None = None,
                 crf: int = 20) -> None:
        self.path = Path(path)
        self.tmp_path = temp_path(self.path, self.path.suffix)
        self.rate = Fraction(rate).limit_denominator(1_000_000)
        if self.rate <= 0:
            raise ValueError(f"{self.path}: frame rate must be positive, got {rate}")
        self.codec = codec or available_codec()
        self.crf = crf
        self.frames_written = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._size: tuple[int, int] | None = None

    def _open(self, height: int, width: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.tmp_path), mode="w")
        stream = self._container.add_stream(self.codec, rate=self.rate)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuvj420p" if self.codec == "mjpeg" else "yuv420p"
        if self.codec == "libx264":
            stream.options = {"crf": str(self.crf), "preset": "veryfast"}
        self._stream = stream
        self._size = (height, width)

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"{self.path}: expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
        if self._container is None:
            self._open(frame.shape[0], frame.shape[1])
        if frame.shape[:2] != self._size:
            raise ValueError(f"{self.path}: frame {self.frames_written} is {frame.shape[1]}x{frame.shape[0]}, "
                             f"expected {self._size[1]}x{self._size[0]}")
        pad = ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0))
        if any(p[1] for p in pad):
            frame = np.pad(frame, pad, mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.frames_written
        video_frame.time_base = 1 / self.rate
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder, close the file and rename it to its final name."""
        if self._container is None:
            raise ValueError(f"{self.path}: no frame was written")
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        self.tmp_path.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file without producing ``path``."""
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
