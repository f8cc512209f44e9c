"""Video inputs: resolve paths/globs to sources and stream their frames.

A *source* is one video file, one folder of frames, one image (a video of one frame) or a live
source (a webcam or a stream URL, :mod:`pavenet.infer.live_source`).
:func:`resolve_input` turns one command line input (a video file, an image, a folder of frames,
a folder of videos, a folder of such folders, a glob, a webcam index or a stream URL) into
sources.
:class:`FrameStream` decodes a source in a background thread (PyAV for videos and live sources,
Pillow for frame folders) into a bounded queue, so memory does not depend on the length of the
video, and gives each frame its time in seconds since the first frame.

Every problem raises :class:`VideoInputError` with a message that names the input.
"""
from __future__ import annotations

import glob
import math
import os
import queue
import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal, Optional, Sequence

import av
import numpy as np

from pavenet.infer.decoding import (DEFAULT_FRAMES_FPS, Timed, VideoInputError, decode_files, decode_live,
                                    decode_video, read_image, stream_rate)
from pavenet.infer.live_source import LiveSpec, live_spec, open_live

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class VideoSource:
    """One video file, one folder of frames, one image (a one-frame video) or a live source.

    A live source's ``path`` is its output name only; FFmpeg opens ``url`` (a stream URL or a
    device) with the input ``format`` (None: guessed).
    """

    path: Path
    kind: Literal["video", "frames", "image", "live"]
    url: str = ""
    format: Optional[str] = None

    @property
    def name(self) -> str:
        """Name for output files: the file stem or the folder name."""
        return self.path.name if self.kind == "frames" else self.path.stem

    @property
    def live(self) -> bool:
        return self.kind == "live"

    @property
    def label(self) -> str:
        """How messages name the source: its path, or a live source's URL."""
        return self.url if self.live else str(self.path)

    @property
    def key(self) -> str:
        """What makes two sources the same: the absolute path, or the URL."""
        return self.url if self.live else os.path.abspath(self.path)


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def folder_files(folder: Path, suffixes: frozenset[str]) -> list[Path]:
    """The files of ``folder`` with one of ``suffixes``, in natural order (frame2 before frame10)."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
    return sorted(files, key=_natural_key)


def _folder_sources(folder: Path) -> list[VideoSource]:
    """The folder as one folder of frames, or its videos; empty when it holds neither."""
    if folder_files(folder, IMAGE_SUFFIXES):
        return [VideoSource(folder, "frames")]
    return [VideoSource(v, "video") for v in folder_files(folder, VIDEO_SUFFIXES)]


def _resolve_folder(folder: Path, spec: str) -> list[VideoSource]:
    """A folder of frames, a folder of videos, or a folder of such folders (one level down, as
    PoseTrack's ``images/val``): each frame folder and each video is its own source."""
    sources = _folder_sources(folder)
    if sources:
        return sources
    subfolders = sorted((p for p in folder.iterdir() if p.is_dir()), key=_natural_key)
    for sub in subfolders:
        sources.extend(_folder_sources(sub))
    if sources:
        return sources
    raise VideoInputError(
        f"{spec}: folder contains no images ({', '.join(sorted(IMAGE_SUFFIXES))}), no videos and "
        "no sub-folders of images or videos"
    )


def _resolve_path(path: Path, spec: str) -> list[VideoSource]:
    if path.is_file():
        return [VideoSource(path, "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video")]
    if path.is_dir():
        return _resolve_folder(path, spec)
    raise VideoInputError(f"{spec}: no such file or folder")


def resolve_input(spec: str) -> list[VideoSource]:
    """Sources of one input: a video file, an image, a folder of frames, a folder of videos, a
    folder of frame folders or video folders (one level down), a glob (each image it matches is
    its own one-frame source), a webcam index or a stream URL."""
    try:
        live = live_spec(spec, os.path.exists(spec))
    except ValueError as exc:
        raise VideoInputError(str(exc)) from None
    if live is not None:
        return [VideoSource(Path(live.name), "live", live.url, live.format)]
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
            if source.key not in seen:
                seen.add(source.key)
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


def _container_info(container: av.container.InputContainer, label: str) -> VideoInfo:
    if not container.streams.video:
        raise VideoInputError(f"{label}: no video stream")
    stream = container.streams.video[0]
    return VideoInfo(stream_rate(stream), stream.codec_context.width, stream.codec_context.height,
                     stream.frames or None)


def _open_live(source: VideoSource) -> tuple[av.container.InputContainer, VideoInfo]:
    """An opened live source and what it declares (no frame count: it has no end)."""
    try:
        container = open_live(LiveSpec(source.url, source.format, source.name))
    except (av.FFmpegError, OSError) as exc:
        raise VideoInputError(f"{source.url}: cannot open the live source ({exc})") from exc
    try:
        info = _container_info(container, source.url)
    except VideoInputError:
        container.close()
        raise
    return container, VideoInfo(info.rate, info.width, info.height, None)


def probe(source: VideoSource, frames_rate: Fraction = DEFAULT_FRAMES_FPS) -> VideoInfo:
    """Frame rate, size and (when the container declares it) frame count of a source.

    A folder of frames or an image has no frame rate of its own; it gets ``frames_rate``. A live
    source is opened and closed again (its size may be 0 until a frame is decoded).
    """
    if source.kind in ("frames", "image"):
        files = [source.path] if source.kind == "image" else folder_files(source.path, IMAGE_SUFFIXES)
        if not files:
            raise VideoInputError(f"{source.path}: folder contains no images")
        width, height = read_image(files[0]).shape[1::-1]
        return VideoInfo(Fraction(frames_rate), width, height, len(files))
    if source.live:
        container, info = _open_live(source)
        container.close()
        return info
    try:
        with av.open(str(source.path)) as container:
            return _container_info(container, str(source.path))
    except av.FFmpegError as exc:
        raise VideoInputError(f"{source.path}: unreadable video ({exc})") from exc


_END = object()


class FrameStream:
    """Iterate over the RGB frames (H, W, 3) uint8 of a source, decoded in a background thread.

    The decoder runs ahead of the consumer by at most ``queue_size`` frames (plus the one it
    is handing over). Errors in the decoder are raised by the iterator as
    :class:`VideoInputError`, as is a frame whose size differs from the first frame's.
    Use as a context manager, or call :meth:`close` when stopping early. ``frames_rate`` is the
    frame rate given to a folder of frames. :meth:`timed` yields ``(frame, seconds since the
    first frame)``: from the container's timestamps, else ``index / rate``.

    A live source is opened here (so that :attr:`info` holds its frame rate). With
    ``drop_frames=True`` a decoder that finds the queue full drops the oldest waiting frame
    instead of waiting (:attr:`dropped` counts them): a consumer slower than a live source then
    lags it by at most ``queue_size`` frames. :attr:`pending`: frames decoded and waiting.
    """

    def __init__(self, source: VideoSource, queue_size: int = 8,
                 frames_rate: Fraction = DEFAULT_FRAMES_FPS, drop_frames: bool = False) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.source = source
        self._container = None
        if source.live:
            self._container, self.info = _open_live(source)
        else:
            self.info = probe(source, frames_rate)
        self.decoded = self.dropped = 0
        self.drop_frames = drop_frames
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"decode:{source.name}", daemon=True)
        self._started = False

    @property
    def rate(self) -> Fraction:
        return self.info.rate

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _frames(self) -> Iterator[Timed]:
        if self.source.kind == "image":
            return decode_files([self.source.path])
        if self.source.kind == "frames":
            return decode_files(folder_files(self.source.path, IMAGE_SUFFIXES))
        if self.source.live:
            return decode_live(self._container, self.source.url)
        return decode_video(self.source.path, self.info.num_frames)

    def _put(self, item: object) -> bool:
        droppable = self.drop_frames and isinstance(item, tuple)  # a frame, not the end or an error
        while not self._stop.is_set():
            try:
                if droppable:
                    self._queue.put_nowait(item)
                else:
                    self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                if droppable:
                    self._drop_oldest()
        return False

    def _drop_oldest(self) -> None:
        try:
            self._queue.get_nowait()
            self.dropped += 1
        except queue.Empty:
            pass

    def _run(self) -> None:
        first = None
        try:
            for frame, pts in self._frames():
                pts = pts if pts is not None and math.isfinite(pts) else None
                first = pts if self.decoded == 0 else first
                known = pts is not None and first is not None
                seconds = float(pts - first) if known else self.decoded / float(self.rate)
                self.decoded += 1
                if not self._put((frame, seconds)):
                    return
            self._put(_END)
        except Exception as exc:  # handed to the consumer thread, which re-raises it
            self._put(exc)

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame, _ in self.timed():
            yield frame

    def timed(self) -> Iterator[tuple[np.ndarray, float]]:
        """Frames with their time in seconds since the first decoded frame (dropped frames leave
        gaps)."""
        if self._started:
            raise RuntimeError(f"{self.source.label}: a FrameStream can be iterated only once")
        self._started = True
        self._thread.start()
        expected = (self.info.height, self.info.width) if self.info.width else None
        index = 0
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, VideoInputError):
                    raise item
                if isinstance(item, Exception):
                    raise VideoInputError(f"{self.source.label}: {item}") from item
                frame, seconds = item
                expected = expected or frame.shape[:2]
                self._check_size(frame, expected, index)
                index += 1
                yield frame, seconds
        finally:
            self.close()

    def _check_size(self, frame: np.ndarray, expected: tuple[int, int], index: int) -> None:
        if frame.shape[:2] != expected:
            raise VideoInputError(
                f"{self.source.label}: frame {index} is {frame.shape[1]}x{frame.shape[0]}, "
                f"expected {expected[1]}x{expected[0]} like the first frame (frames of changing size)"
            )

    def close(self) -> None:
        """Stop the decoder thread and release its frames (and a live source never iterated)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if not self._started and self._container is not None:
            self._container.close()
        while not self._queue.empty():
            self._queue.get_nowait()

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
