"""Decoding the frames of one source: a video file, a folder of frames, an image, a live stream.

Each decoder yields ``(frame, seconds)``: the RGB uint8 frame (H, W, 3) and its presentation
time in seconds as the container gives it (None when it gives none; frames of a folder have no
time). Every problem raises :class:`VideoInputError` naming the source.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import av
import numpy as np
from PIL import Image

from pavenet.data.images import IMAGE_ERRORS, open_rgb8
from pavenet.errors import PavenetError

#: Frame rate assumed for a folder of frames (PoseTrack sequences are roughly 25-30 fps), and
#: for a video that declares none.
DEFAULT_FRAMES_FPS = Fraction(25)

Timed = tuple[np.ndarray, Optional[float]]


class VideoInputError(PavenetError, RuntimeError):
    """An input cannot be read; the message names the input and the problem."""


def read_image(path: Path) -> np.ndarray:
    try:
        return np.asarray(open_rgb8(path))
    except Image.DecompressionBombError as exc:
        raise VideoInputError(f"{path}: image too large to decode safely ({exc})") from exc
    except IMAGE_ERRORS as exc:
        raise VideoInputError(f"{path}: unreadable image ({exc})") from exc


def stream_rate(stream: av.video.stream.VideoStream) -> Fraction:
    """The frame rate a video stream declares (average, else guessed), else 25."""
    return Fraction(stream.average_rate or stream.guessed_rate or DEFAULT_FRAMES_FPS)


def _declared_end(stream: av.video.stream.VideoStream) -> float | None:
    """Seconds at which the stream says it ends (start + duration); None when it does not say."""
    if not stream.duration or stream.time_base is None:
        return None
    return float((stream.start_time or 0) * stream.time_base + stream.duration * stream.time_base)


def decode_video(path: Path, declared: int | None) -> Iterator[Timed]:
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
                yield frame.to_ndarray(format="rgb24"), frame.time
    except av.FFmpegError as exc:
        raise VideoInputError(f"{path}: decoding failed after {count} frames ({exc})") from exc
    if declared is not None and count < declared:
        raise VideoInputError(f"{path}: truncated video, decoded {count} of {declared} frames")
    if count == 0:
        raise VideoInputError(f"{path}: the video has no decodable frames")
    if declared is None and end is not None and reached is not None and reached < end - 1.5 * step:
        raise VideoInputError(f"{path}: truncated video, decoded {count} frames up to {reached:.2f} s "
                              f"of {end:.2f} s")


def decode_files(files: list[Path]) -> Iterator[Timed]:
    """The images of a folder of frames, in order (no timestamps)."""
    for file in files:
        yield read_image(file), None


def _decode(codec: av.codec.context.CodecContext, packet: Optional[av.Packet]) -> list[av.VideoFrame]:
    """The frames a packet completes (None: flush the decoder); none for a damaged packet or a
    decoder that was already flushed."""
    try:
        return list(codec.decode(packet))
    except (av.InvalidDataError, av.EOFError):
        return []


def decode_live(container: av.container.InputContainer, label: str) -> Iterator[Timed]:
    """Frames of an opened live source until it ends (the container is closed at the end).

    No frame threading, which would hold frames back; a damaged packet is skipped, as a player
    does. A live stream ends at its end of file or when reading fails after its first frame (its
    connection closed); the frames the decoder still holds are given then.
    """
    count = 0
    with container:
        codec = container.streams.video[0].codec_context
        try:
            for packet in container.demux(container.streams.video[0]):
                for frame in _decode(codec, packet):
                    count += 1
                    yield frame.to_ndarray(format="rgb24"), frame.time
        except av.FFmpegError as exc:
            if count == 0:
                raise VideoInputError(f"{label}: the stream failed before its first frame ({exc})") from exc
        for frame in _decode(codec, None):
            count += 1
            yield frame.to_ndarray(format="rgb24"), frame.time
    if count == 0:
        raise VideoInputError(f"{label}: the stream ended before its first frame")
