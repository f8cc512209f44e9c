"""``PoseEstimator``: video in, tracked poses out (the Python API behind ``pavenet predict``).

Streaming: frames are decoded ahead in a bounded queue (:class:`FrameStream`), the backbone and
spatial encoder run ONCE per frame, and the per-frame memories are cached and reused by the
``T`` overlapping windows (:class:`SlidingWindows`); ``batch_size`` windows are decoded per
forward pass. Every frame is the key frame of one window, so every frame gets predictions;
near the ends of a video, the slots that fall outside it show the key frame (as in training).
Track ids come from :class:`WindowLinker`.

Live input (a webcam or a stream URL, or ``causal=True``) uses causal windows: frame ``t``'s
window is complete, and its result given, as soon as frame ``t`` is in (the future slots show
frame ``t``, :mod:`pavenet.infer.windows`), a latency of 0 frames instead of ``T // 2 * stride``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import torch

from pavenet.data.transforms import resize_frames, resized_size
from pavenet.export.onnx_runtime import OnnxRuntimeNetwork
from pavenet.infer.compiled import CompiledNetwork
from pavenet.infer.linker import LinkerConfig, WindowLinker, WindowPeople, postprocess_defaults
from pavenet.infer.results import FramePrediction, PersonPrediction  # re-exported: the results API
from pavenet.infer.smoothing import KeypointSmoother, SmoothingConfig
from pavenet.infer.tracker_config import TrackerConfig, load_tracker_config
from pavenet.infer.video_io import DEFAULT_FRAMES_FPS, FrameStream, VideoSource, resolve_input
from pavenet.infer.windows import SlidingWindows, Window
from pavenet.model.encoder import FrameMemory
from pavenet.model.loading import load_checkpoint_model
from pavenet.model.postprocess import build_postprocessor
from pavenet.runtime.device import autocast_context, pick_device
from pavenet.runtime.threads import choose_threads


class PoseEstimator:
    """Runs a trained network over clips and whole videos."""

    def __init__(self, model: torch.nn.Module, postprocessor: torch.nn.Module, short_side: int,
                 max_size: int, device: Optional[str | torch.device] = None,
                 linker: Optional[LinkerConfig] = None, smoothing: Optional[SmoothingConfig] = None,
                 cache: bool = True, amp: bool = False, stride: int = 1,
                 compile: Optional[str] = None, resize: str = "antialias",
                 threads: Optional[int | str] = None):
        """``amp``: bfloat16 autocast on CUDA. ``compile``: a ``torch.compile`` mode for the
        network (:class:`pavenet.infer.compiled.CompiledNetwork`; "reduce-overhead" replays
        CUDA graphs), None for eager. ``resize``: the test-time resize
        (:func:`pavenet.data.transforms.resize_frames`). ``threads``: CPU intra-op threads (an int,
        or "auto" for the usable cores that other programs leave free, :mod:`pavenet.runtime.threads`;
        None keeps torch's setting)."""
        if threads is not None:
            torch.set_num_threads(choose_threads(None if threads == "auto" else int(threads)))
        self.device = pick_device(str(device) if device is not None else None)
        self.model = model.to(self.device).eval()
        if compile is not None:
            self.model = CompiledNetwork(self.model, compile)
        self.postprocessor = postprocessor
        self.short_side, self.max_size, self.resize = short_side, max_size, resize
        if linker is None:  # the post-processing's joint threshold (postprocess_defaults)
            mode = getattr(postprocessor, "mode", "nms_free")
            linker = LinkerConfig(**postprocess_defaults(mode, LinkerConfig.score_threshold))
        self.linker_cfg = linker
        self.smoothing = smoothing
        self.cache, self.amp, self.stride = cache, amp, stride
        self.num_frames = int(model.num_frames)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: Optional[str] = None, **kwargs: Any) -> "PoseEstimator":
        """Build the network from the config stored in a checkpoint and load its weights."""
        model, cfg = load_checkpoint_model(str(path))
        return cls.from_config(model, cfg, device=device, **kwargs)

    @classmethod
    def from_config(cls, model: torch.nn.Module, cfg: Any, device: Optional[str | torch.device] = None,
                    **kwargs: Any) -> "PoseEstimator":
        """An estimator with the test-time resize, clip stride, top-k and person-score threshold of
        a :class:`pavenet.config.Config`. The threshold is applied by the linker (so a call can
        lower it), the post-processor keeps the top-k. ``tracker``: a
        :class:`pavenet.infer.tracker_config.TrackerConfig` or its YAML path (linker and smoothing
        settings; the config's score threshold unless the tracker sets one)."""
        kwargs.setdefault("stride", cfg.data.frame_stride)
        defaults = postprocess_defaults(cfg.postprocess.mode, cfg.postprocess.score_threshold)
        tracker = kwargs.pop("tracker", None)
        if tracker is not None:
            if "linker" in kwargs:
                raise ValueError("give the tracker settings as tracker= or as linker=, not both")
            tracker = tracker if isinstance(tracker, TrackerConfig) else load_tracker_config(tracker)
            kwargs["linker"] = tracker.linker_for(defaults)
            kwargs.setdefault("smoothing", tracker.smoothing)
        kwargs.setdefault("linker", LinkerConfig(**defaults))
        kwargs.setdefault("resize", cfg.data.test_resize)
        post = build_postprocessor(cfg, score_threshold=0.0)
        return cls(model, post, cfg.data.test_short_side, cfg.data.test_max_size, device=device, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | Path, device: Optional[str] = None, threads: Optional[int] = None,
                  **kwargs: Any) -> "PoseEstimator":
        """Run the network with ONNX Runtime on the CPU (the ``onnxruntime`` backend).

        ``path`` is a ``pavenet export`` output (``model.onnx`` with its ``model.encoder.onnx`` and
        ``model.decoder.onnx``, or their folder) or a checkpoint, whose streaming graphs are then
        exported for each input size on first use. Post-processing and tracking are unchanged.
        """
        p = Path(path)
        exported = p.suffix == ".onnx" or (p.is_dir() and any(p.glob("*.encoder.onnx")))
        net = (OnnxRuntimeNetwork.from_export(p, threads) if exported
               else OnnxRuntimeNetwork.from_checkpoint(p, threads))
        return cls.from_config(net, net.config, device=device or "cpu", **kwargs)

    # ---------------------------------------------------------------- tensors
    def preprocess(self, frames: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 frames (H, W, 3) of one size -> (N, 3, h, w) normalised network input."""
        h, w = frames[0].shape[:2]
        size = resized_size(w, h, self.short_side, self.max_size)
        return resize_frames(frames, size, self.resize).to(self.device)

    def _autocast(self):
        return autocast_context(self.device, self.amp)

    @torch.no_grad()
    def encode_frames(self, images: torch.Tensor) -> list[FrameMemory]:
        mask = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool, device=self.device)
        with self._autocast():
            mem = self.model.encode(images, mask)
        index = torch.arange(images.shape[0], device=self.device)
        return [mem.select(index[i:i + 1]) for i in range(images.shape[0])]

    @torch.no_grad()
    def decode_windows(self, windows: list[Window], orig_size: tuple[int, int]) -> list[list[dict]]:
        if self.cache:
            memory = FrameMemory.cat([m for w in windows for m in w.items])
        else:
            memory = FrameMemory.cat(self.encode_frames(torch.cat([x for w in windows for x in w.items])))
        with self._autocast():
            outputs = self.model.decode(memory, len(windows))
        sizes = torch.tensor([orig_size] * len(windows), device=self.device)
        return self.postprocessor(outputs, sizes)

    # ---------------------------------------------------------------- API
    def predict_clip(self, frames: list[np.ndarray]) -> list[list[dict]]:
        """Post-processed output (T dicts, docs/interfaces.md) of one clip of T frames, no tracking."""
        if len(frames) != self.num_frames:
            raise ValueError(f"the model reads clips of {self.num_frames} frames, got {len(frames)}")
        items = self.encode_frames(self.preprocess(frames))
        window = Window(key=self.num_frames // 2, frames=tuple(range(len(frames))), items=tuple(items))
        return self.decode_windows([window], frames[0].shape[:2])[0]

    def predict_video(self, source: str | Path | VideoSource | FrameStream, batch_size: int = 1,
                      score_threshold: Optional[float] = None, keep_images: bool = False,
                      queue_size: int = 8, causal: Optional[bool] = None,
                      drop_frames: bool = False) -> Iterator[FramePrediction]:
        """Stream the tracked people of every frame of a video file, a folder of frames, an image,
        or a live source (``"0"`` for a webcam, a stream URL, or an opened :class:`FrameStream`).

        ``causal`` (default: for live sources only): causal windows, each frame's result as soon
        as the frame is in; from a live source, frames already waiting are decoded together (up to
        ``batch_size``), so a slow model catches up. ``drop_frames``: a live source drops the
        oldest waiting frame when ``queue_size`` frames wait (so the lag stays bounded); the
        timestamps show the gaps. Timestamps: seconds since the first frame.
        """
        if not isinstance(source, FrameStream):
            source = _one_source(source)
            source = FrameStream(source, queue_size=queue_size, drop_frames=drop_frames and source.live)
        stream = source
        live = stream.source.live
        times: dict[int, float] = {}

        def frames() -> Iterator[np.ndarray]:
            for index, (frame, seconds) in enumerate(stream.timed()):
                times[index] = seconds
                yield frame

        with stream:
            yield from self._stream(frames(), batch_size, score_threshold, keep_images, float(stream.rate),
                                    live if causal is None else causal, times.pop,
                                    (lambda: stream.pending == 0) if live else None)

    def predict_frames(self, frames: Iterable[np.ndarray], batch_size: int = 1,
                       score_threshold: Optional[float] = None, keep_images: bool = False,
                       fps: Optional[float] = None, causal: bool = False) -> Iterator[FramePrediction]:
        """Tracked people of every frame of an iterable of RGB frames (one video).

        For live input (a generator of camera frames), pass ``causal=True``: each frame's result
        comes as soon as the frame is in, after ``batch_size`` frames at most (1: at once).
        ``fps`` gives the timestamps (``index / fps``; None without it) and the smoothing's rate.
        """
        def time_of(index: int) -> Optional[float]:
            return index / fps if fps else None

        yield from self._stream(iter(frames), batch_size, score_threshold, keep_images,
                                float(fps or DEFAULT_FRAMES_FPS), causal, time_of, None)

    def _stream(self, frames: Iterator[np.ndarray], batch_size: int, score_threshold: Optional[float],
                keep_images: bool, fps: float, causal: bool, time_of: Callable[[int], Optional[float]],
                flush_when: Optional[Callable[[], bool]]) -> Iterator[FramePrediction]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        linker_cfg = self.linker_cfg
        if score_threshold is not None:
            linker_cfg = LinkerConfig(**{**linker_cfg.__dict__, "score_threshold": score_threshold})
        smoother = (KeypointSmoother(self.smoothing, fps)
                    if self.smoothing and self.smoothing.enabled else None)
        run = _VideoRun(self, WindowLinker(linker_cfg), batch_size, keep_images, smoother,
                        SlidingWindows(self.num_frames, self.stride, causal), time_of, flush_when)
        yield from run.process(frames)


def _one_source(source: str | Path | VideoSource) -> VideoSource:
    if isinstance(source, VideoSource):
        return source
    sources = resolve_input(str(source))
    if len(sources) != 1:
        raise ValueError(f"{source}: expected one video, found {len(sources)}")
    return sources[0]


class _VideoRun:
    """State of one streaming pass over a video."""

    def __init__(self, est: PoseEstimator, linker: WindowLinker, batch_size: int, keep_images: bool,
                 smoother: Optional[KeypointSmoother], windows: SlidingWindows,
                 time_of: Callable[[int], Optional[float]], flush_when: Optional[Callable[[], bool]]):
        self.est, self.linker, self.batch_size = est, linker, batch_size
        self.keep_images, self.smoother = keep_images, smoother
        self.windows, self.time_of, self.flush_when = windows, time_of, flush_when
        self.images: dict[int, np.ndarray] = {}
        self.ready: list[Window] = []
        self.orig_size: Optional[tuple[int, int]] = None

    def process(self, frames: Iterable[np.ndarray]) -> Iterator[FramePrediction]:
        chunk: list[np.ndarray] = []
        count = 0
        for frame in frames:
            if self.orig_size is None:
                self.orig_size = frame.shape[:2]
            if self.keep_images:
                self.images[count] = frame
            chunk.append(frame)
            count += 1
            if len(chunk) == self.batch_size or (self.flush_when is not None and self.flush_when()):
                yield from self._push(chunk, final=False)
                chunk = []
        if count == 0:
            raise ValueError("the video has no frames")
        yield from self._push(chunk, final=True)

    def _push(self, chunk: list[np.ndarray], final: bool) -> Iterator[FramePrediction]:
        if chunk:
            images = self.est.preprocess(chunk)
            items = self.est.encode_frames(images) if self.est.cache else list(images.split(1))
            for item in items:
                self.ready.extend(self.windows.push(item))
        if final:
            self.ready.extend(self.windows.finish())
        flush = final or self.windows.causal  # causal windows: every pushed frame's result now
        while len(self.ready) >= self.batch_size or (flush and self.ready):
            batch, self.ready = self.ready[:self.batch_size], self.ready[self.batch_size:]
            yield from self._link(batch)

    def _link(self, batch: list[Window]) -> Iterator[FramePrediction]:
        for window, clip in zip(batch, self.est.decode_windows(batch, self.orig_size)):
            people = WindowPeople.from_clip(window.frames, clip)
            ids = self.linker.update(window.key, people)
            key = people.keypoints[:, people.key_slot]
            kept = [i for i, tid in enumerate(ids) if tid >= 0]
            keypoints = key[kept]
            if self.smoother is not None and kept:
                keypoints = self.smoother.smooth(window.key, [ids[i] for i in kept], keypoints)
            persons = [PersonPrediction(ids[i], keypoints[n].astype(np.float32), float(people.scores[i]))
                       for n, i in enumerate(kept)]
            best = float(np.max(people.scores)) if len(people) else 0.0
            yield FramePrediction(window.key, persons, self.images.pop(window.key, None), best,
                                  self.time_of(window.key))
