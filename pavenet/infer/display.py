"""A window that shows each overlay frame as it is predicted (``pavenet predict --show``).

With OpenCV installed, ``cv2.imshow``; otherwise a Matplotlib figure on an interactive backend
(TkAgg, QtAgg, ...). :func:`open_viewer` raises :class:`DisplayError` when there is no display
(no ``DISPLAY`` / ``WAYLAND_DISPLAY`` on Linux) or no way to open a window. A viewer's
``show(image)`` returns False once the user closed the window or pressed ``q`` / Esc.
"""
from __future__ import annotations

import os
import sys
from typing import Mapping, Protocol

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from pavenet.errors import PavenetError

try:  # optional: a faster window when OpenCV is installed
    import cv2
except ImportError:  # pragma: no cover - depends on the installation
    cv2 = None

#: Matplotlib backends that draw into files or memory only
NON_INTERACTIVE = frozenset({"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"})
QUIT_KEYS = ("q", "escape")


class DisplayError(PavenetError, RuntimeError):
    """No window can be opened; the message says why."""


class Viewer(Protocol):
    def show(self, image: np.ndarray) -> bool: ...

    def close(self) -> None: ...


def has_display(env: Mapping[str, str] | None = None, platform: str | None = None) -> bool:
    """Whether windows can be opened: always on macOS and Windows, with an X11 or Wayland display
    elsewhere."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if platform == "darwin" or platform.startswith("win"):
        return True
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


class OpenCvViewer:
    """``cv2.imshow`` in a resizable window."""

    def __init__(self, title: str) -> None:
        self.title = title
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def show(self, image: np.ndarray) -> bool:
        cv2.imshow(self.title, np.ascontiguousarray(image[:, :, ::-1]))
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27) and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        cv2.destroyWindow(self.title)


class MatplotlibViewer:
    """A Matplotlib figure whose image is replaced by every new frame."""

    def __init__(self, title: str) -> None:
        self.figure = plt.figure(title)
        self.axes = self.figure.add_axes((0, 0, 1, 1))
        self.axes.set_axis_off()
        self.artist = None
        self.closed = False
        self.figure.canvas.mpl_connect("close_event", self._on_close)
        self.figure.canvas.mpl_connect("key_press_event", self._on_key)

    def _on_close(self, _event: object) -> None:
        self.closed = True

    def _on_key(self, event: object) -> None:
        if getattr(event, "key", None) in QUIT_KEYS:
            self.closed = True

    def show(self, image: np.ndarray) -> bool:
        if self.closed:
            return False
        if self.artist is None:
            self.artist = self.axes.imshow(image)
            self.figure.show()
        else:
            self.artist.set_data(image)
        self.figure.canvas.draw_idle()
        self.figure.canvas.flush_events()
        return not self.closed

    def close(self) -> None:
        plt.close(self.figure)


def open_viewer(title: str = "pavenet") -> Viewer:
    """A window for overlay frames; :class:`DisplayError` when none can be opened."""
    if not has_display():
        raise DisplayError("--show needs a display, and none is set (no DISPLAY or WAYLAND_DISPLAY); "
                           "use --render to write the overlay to a file instead")
    try:
        if cv2 is not None:
            return OpenCvViewer(title)
        backend = matplotlib.get_backend().lower()
        if backend in NON_INTERACTIVE:
            raise DisplayError(f"--show: Matplotlib's backend {backend!r} cannot open windows; install "
                               "tkinter or PyQt (or opencv-python), or set MPLBACKEND")
        return MatplotlibViewer(title)
    except DisplayError:
        raise
    except Exception as exc:  # a display that cannot be reached, a broken GUI toolkit
        raise DisplayError(f"--show: cannot open a window ({type(exc).__name__}: {exc})") from exc
