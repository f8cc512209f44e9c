"""Video inputs: resolve paths/globs to sources and stream their frames.

A *source* is one video file, one folder of frames or one image (a video of one frame).
:func:`resolve_input` turns one command line input (a video file, an image, a folder of frames,
a folder of videos or a glob) into sources.
:class:`FrameStream` decodes a source in a background thread (PyAV for videos, Pillow for
frame folders) into a bounded queue, so memory does not depend on the length of the video.

Every problem raises :class:`VideoInputError` with a message that names the input.
"""
from __future__ import annotations

import glob
import os
import queue
import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal, Sequence

import av
import numpy as np
from PIL import Image

from pavenet.data.images import IMAGE_ERRORS, open_rgb8
from pavenet.errors import PavenetError

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
#: Frame rate assumed for a folder of frames (PoseTrack sequences are roughly 25-30 fps).
DEFAULT_FRAMES_FPS = Fraction(25)


class VideoInputError(PavenetError, RuntimeError):
    """An input cannot be read; the message names the input and the problem."""


@dataclass(frozen=True)
class VideoSource:
    """One video file, one folder of frames or one image (a one-frame video)."""

    path: Path
    kind: Literal["video", "frames", "image"]

    @property
    def name(self) -> str:
        """Name for output files: the file stem or the folder name."""
        return self.path.name if self.kind == "frames" else self.path.stem


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _children(folder: Path, suffixes: frozenset[str]) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
    return sorted(files, key=_natural_key)


def _resolve_path(path: Path, spec: str) -> list[VideoSource]:
    if path.is_file():
        return [VideoSource(path, "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video")]
    if path.is_dir():
        if _children(path, IMAGE_SUFFIXES):
            return [VideoSource(path, "frames")]
        videos = _children(path, VIDEO_SUFFIXES)
        if videos:
            return [VideoSource(v, "video") for v in videos]
        raise VideoInputError(
            f"{spec}: folder contains no images ({', '.join(sorted(IMAGE_SUFFIXES))}) and no videos"
        )
    raise VideoInputError(f"{spec}: no such file or folder")


def resolve_input(spec: str) -> list[VideoSource]:
    """Sources of one input: a video file, an image, a folder of frames, a folder of videos or a
    glob (each image it matches is its own one-frame source)."""
    if glob.has_magic(spec):
        matches = sorted(glob.glob(spec), key=lambda p: _natural_key(Path(p)))
        if not matches:
            raise VideoInputError(f"{spec}: the pattern matches nothing")
        out: list[VideoSource] = []
        for match in matches:
            out.extend(_resolve_path(Path(match), match))
        return out
    return _resolve_path(Path(spec), spec)


def resolve_inputs(specs: Sequence[str]) -> tuple[list[VideoSource], list[VideoInputError]]:
    """Resolve every input; return the sources (duplicates removed, also when given by different
    paths such as ``a`` and ``./a`` or an absolute path) and one error per bad input."""
    sources: list[VideoSource] = []
    errors: list[VideoInputError] = []
    seen: set[str] = set()
    for spec in specs:
        try:
            found = resolve_input(spec)
        except VideoInputError as exc:
            errors.append(exc)
            continue
        for source in found:
            key = os.path.abspath(source.path)
            if key not in seen:
                seen.add(key)
                sources.append(source)
    return sources, errors


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a source before decoding: frame rate, size, declared frame count."""

    rate: Fraction
    width: int
    height: int
    num_frames: int | None

    @property
    def fps(self) -> float:
        return float(self.rate)


def probe(source: VideoSource, frames_rate: Fraction = DEFAULT_FRAMES_FPS) -> VideoInfo:
    """Frame rate, size and (when the container declares it) frame count of a source.

    A folder of frames or an image has no frame rate of its own; it gets ``frames_rate``.
    """
    if source.kind in ("frames", "image"):
        files = [source.path] if source.kind == "image" else _children(source.path, IMAGE_SUFFIXES)
        if not files:
            raise VideoInputError(f"{source.path}: folder contains no images")
        width, height = _read_image(files[0]).shape[1::-1]
        return VideoInfo(Fraction(frames_rate), width, height, len(files))
    try:
        with av.open(str(source.path)) as container:
            if not container.streams.video:
                raise VideoInputError(f"{source.path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or DEFAULT_FRAMES_FPS
            return VideoInfo(Fraction(rate), stream.codec_context.width,
                             stream.codec_context.height, stream.frames or None)
    except av.FFmpegError as exc:
        raise VideoInputError(f"{source.path}: unreadable video ({exc})") from exc


def _read_image(path: Path) -> np.ndarray:
    try:
        return np.asarray(open_rgb8(path))
    except Image.DecompressionBombError as exc:
        raise VideoInputError(f"{path}: image too large to decode safely ({exc})") from exc
    except IMAGE_ERRORS as exc:
        raise VideoInputError(f"{path}: unreadable image ({exc})") from exc


def _declared_end(stream: av.video.stream.VideoStream) -> float | None:
    """Seconds at which the stream says it ends (start + duration); None when it does not say."""
    if not stream.duration or stream.time_base is None:
        return None
    return float((stream.start_time or 0) * stream.time_base + stream.duration * stream.time_base)


def _decode_video(path: Path, declared: int | None) -> Iterator[np.ndarray]:
    """Frames of a video file. A file that ends before its declared frame count, or (when it
    declares no count, as fragmented MP4 does) before its declared duration, is truncated: threaded
    decoding drops the error of a cut-off last packet, so the frames are counted against both."""
    count, end, reached = 0, None, None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            end, step = _declared_end(stream), 1.0 / float(stream.average_rate or DEFAULT_FRAMES_FPS)
            for frame in container.decode(stream):
                count += 1
                if frame.time is not None:
                    reached = frame.time + step
                yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as exc:
        raise VideoInputError(f"{path}: decoding failed after {count} frames ({exc})") from exc
    if declared is not None and count < declared:
        raise VideoInputError(f"{path}: truncated video, decoded {count} of {declared} frames")
    if count == 0:
        raise VideoInputError(f"{path}: the video has no decodable frames")
    if declared is None and end is not None and reached is not None and reached < end - 1.5 * step:
        raise VideoInputError(f"{path}: truncated video, decoded {count} frames up to {reached:.2f} s "
                              f"of {end:.2f} s")


def _decode_frames(folder: Path) -> Iterator[np.ndarray]:
    for file in _children(folder, IMAGE_SUFFIXES):
        yield _read_image(file)


_END = object()


class FrameStream:
    """Iterate over the RGB frames (H, W, 3) uint8 of a source, decoded in a background thread.

    The decoder runs ahead of the consumer by at most ``queue_size`` frames (plus the one it
    is handing over). Errors in the decoder are raised by the iterator as
    :class:`VideoInputError`, as is a frame whose size differs from the first frame's.
    Use as a context manager, or call :meth:`close` when stopping early. ``frames_rate`` is the
    frame rate given to a folder of frames.
    """

    def __init__(self, source: VideoSource, queue_size: int = 8,
                 frames_rate: Fraction = DEFAULT_FRAMES_FPS) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.source = source
        self.info = probe(source, frames_rate)
        self.decoded = 0
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"decode:{source.name}", daemon=True)
        self._started = False

    @property
    def rate(self) -> Fraction:
        return self.info.rate

    def _frames(self) -> Iterator[np.ndarray]:
        if self.source.kind == "image":
            return iter([_read_image(self.source.path)])
        if self.source.kind == "frames":
            return _decode_frames(self.source.path)
        return _decode_video(self.source.path, self.info.num_frames)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for frame in self._frames():
                self.decoded += 1
                if not self._put(frame):
                    return
            self._put(_END)
        except Exception as exc:  # handed to the consumer thread, which re-raises it
            self._put(exc)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._started:
            raise RuntimeError(f"{self.source.path}: a FrameStream can be iterated only once")
        self._started = True
        self._thread.start()
        expected = (self.info.height, self.info.width)
        index = 0
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, VideoInputError):
                    raise item
                if isinstance(item, Exception):
                    raise VideoInputError(f"{self.source.path}: {item}") from item
                if item.shape[:2] != expected:
                    raise VideoInputError(
                        f"{self.source.path}: frame {index} is {item.shape[1]}x{item.shape[0]}, "
                        f"expected {expected[1]}x{expected[0]} like the first frame (frames of changing size)"
                    )
                index += 1
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the decoder thread and release its frames."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        while not self._queue.empty():
            self._queue.get_nowait()

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
