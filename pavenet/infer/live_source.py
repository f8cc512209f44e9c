"""Live inputs: a webcam index, or an ``rtsp://``, ``http(s)://``, ... stream, read through PyAV.

``0`` (any digits that do not name an existing file or folder) is a webcam: ``/dev/video0``
through FFmpeg's ``v4l2`` input on Linux, device ``0`` of ``avfoundation`` on macOS. A URL with
one of :data:`LIVE_SCHEMES` is opened by FFmpeg as it is (an HTTP URL may serve an MPEG-TS or
MJPEG stream, or any video file). A live source can be read once only and has no known length.
Opening and reading wait at most :data:`LIVE_TIMEOUT` seconds for data.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Optional
from urllib.parse import urlsplit

import av

#: URL schemes read as live streams
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
#: seconds FFmpeg waits for a live source to open, and for each read
LIVE_TIMEOUT = 10.0


@dataclass(frozen=True)
class LiveSpec:
    """What FFmpeg opens for one live input: ``url`` (a URL or a device), its input ``format``
    (None: FFmpeg guesses) and the ``name`` its outputs get."""

    url: str
    format: Optional[str]
    name: str


def _webcam(index: str) -> LiveSpec:
    if sys.platform.startswith("linux"):
        return LiveSpec(f"/dev/video{int(index)}", "v4l2", f"webcam{int(index)}")
    if sys.platform == "darwin":
        return LiveSpec(str(int(index)), "avfoundation", f"webcam{int(index)}")
    raise ValueError(f"{index}: a webcam index needs Linux (v4l2) or macOS (avfoundation); "
                     "give the camera as a stream URL instead")


def _url_name(url: str) -> str:
    """Output name of a stream URL: the last path component without its extension, else the host."""
    parts = urlsplit(url)
    stem = PurePosixPath(parts.path).stem if parts.path.strip("/") else ""
    return stem or (parts.hostname or "stream")


def live_spec(spec: str, exists: bool) -> Optional[LiveSpec]:
    """The live source a command-line input names, or None for a file, folder or glob.
    ``exists``: whether ``spec`` names an existing path (which a digit string then means)."""
    if spec.isdigit() and not exists:
        return _webcam(spec)
    scheme = urlsplit(spec).scheme.lower()
    if scheme in LIVE_SCHEMES and "://" in spec:
        return LiveSpec(spec, None, _url_name(spec))
    return None


def open_live(spec: LiveSpec, timeout: float = LIVE_TIMEOUT) -> av.container.InputContainer:
    """Open a live source with FFmpeg; raises ``av.FFmpegError`` or ``OSError`` when it cannot."""
    return av.open(spec.url, format=spec.format, timeout=(timeout, timeout))
