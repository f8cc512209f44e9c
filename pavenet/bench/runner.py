"""The benchmark grid: pavenet (T frames and T=1) against the two-stage baseline.

For every dtype, compile setting, batch size and people count N, four rows are measured:

- ``pavenet`` ``streaming``: encode only the newest frame, concatenate its memory with the
  cached memories of the clip's other T-1 frames and decode the clip (what
  :class:`pavenet.infer.estimator.PoseEstimator` does with ``cache=True``), then post-process;
- ``pavenet`` ``recompute``: encode all T frames every step (``cache=False``), decode,
  post-process;
- ``pavenet_t1``: the same network built with ``model.num_frames=1`` (streaming = recompute);
- ``two_stage`` ``per_frame``: :class:`pavenet.bench.two_stage.TwoStagePose` with N people.

pavenet's frames are rendered with N synthetic people at the input size; its cost does not
depend on the content (fixed query counts, fixed top-k), which the rows show directly. All
models take tensors already at the input size: decoding and resizing are excluded for all.
:func:`run_benchmark` writes ``bench.json`` and ``bench.md`` (:mod:`pavenet.bench.report`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

from pavenet.bench import MODELS
from pavenet.bench.report import ratio_rows, reference_people, spread_rows, write_report
from pavenet.bench.timing import achieved, count_flops, device_name, device_sync, peak_flops, time_callable
from pavenet.bench.two_stage import CROP_SIZE, TwoStagePose
from pavenet.config import config_path, load_config
from pavenet.data.synthetic_figures import draw_figure, figure_pose
from pavenet.data.synthetic_scene import PAN, background, sample_figure
from pavenet.data.transforms import to_tensor
from pavenet.infer import GRAPH_MODES, check_compile_mode
from pavenet.infer.compiled import copy_outputs
from pavenet.model import build
from pavenet.model.encoder import FrameMemory
from pavenet.runtime.device import pick_device
from pavenet.runtime.progress import progress_bar

DEFAULT_PEOPLE = (1, 3, 5, 10, 20, 50)
QUICK_PEOPLE = (1, 3)
QUICK_SIZE, QUICK_CROP = (64, 64), (64, 48)
#: Fewest warm-up calls of a compiled row: compilation, then a possible recompile.
COMPILED_WARMUP = 2


@dataclass
class BenchPlan:
    """What to run; ``None`` fields take device-dependent defaults (see :func:`resolve`)."""

    out: Path = Path("runs/bench")
    config: Optional[Path] = None
    device: Optional[str] = None
    size: Optional[tuple[int, int]] = None
    people: Optional[tuple[int, ...]] = None
    repeats: Optional[int] = None
    warmup: Optional[int] = None
    batch: Optional[int] = None
    only_batch: bool = False
    models: tuple[str, ...] = MODELS
    compile: bool = False
    compile_only: bool = False
    compile_mode: str = "default"
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    crop: Optional[tuple[int, int]] = None
    threads: Optional[int] = None
    quick: bool = False


@dataclass
class Settings:
    """A plan with every default filled in for the device."""

    device: torch.device
    config: Path
    size: tuple[int, int]
    people: tuple[int, ...]
    repeats: int
    warmup: int
    batches: tuple[int, ...]
    dtypes: tuple[str, ...]
    compile_modes: tuple[bool, ...]
    crop: tuple[int, int]
    compile_mode: str = "default"
    models: tuple[str, ...] = MODELS
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    model: str
    mode: str
    people: int
    batch: int
    dtype: str
    compiled: bool


def resolve(plan: BenchPlan) -> Settings:
    """Defaults: CUDA -> ResNet-50 config at 800x1333, batch 1 and 8, 5 + 20 calls; CPU -> the
    tiny config at 256x256, batch 1, 1 + 5 calls, no bfloat16; ``quick`` -> 64x64, 64x48 crops,
    1 and 3 people, batch 1 and 2, one timed call. Raises RuntimeError for CUDA without CUDA."""
    device = pick_device(plan.device)
    cuda = device.type == "cuda"
    default_config = "pavenet_r50" if cuda and not plan.quick else "synthetic_tiny"
    size = plan.size or (QUICK_SIZE if plan.quick else (800, 1333) if cuda else (256, 256))
    batch = plan.batch if plan.batch is not None else (2 if plan.quick else 8 if cuda else 1)
    _check_choices(plan, batch)
    s = Settings(
        device=device, config=config_path(plan.config or default_config),
        size=tuple(size), people=tuple(plan.people or (QUICK_PEOPLE if plan.quick else DEFAULT_PEOPLE)),
        repeats=plan.repeats or (1 if plan.quick else 20 if cuda else 5),
        warmup=plan.warmup if plan.warmup is not None else (0 if plan.quick else 5 if cuda else 1),
        batches=(batch,) if plan.only_batch else tuple(sorted({1, batch})), dtypes=(),
        compile_modes=(True,) if plan.compile_only else (False, True) if plan.compile else (False,),
        crop=tuple(plan.crop or (QUICK_CROP if plan.quick else CROP_SIZE)),
        compile_mode=plan.compile_mode, models=tuple(plan.models))
    for dtype in plan.dtypes:
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"unknown dtype {dtype!r} (float32 or bfloat16)")
        if dtype == "bfloat16" and not cuda:
            s.skipped.append("bfloat16: autocast bf16 is only benchmarked on CUDA")
        else:
            s.dtypes += (dtype,)
    if not s.dtypes:
        raise ValueError("no dtype left to run on this device (bfloat16 needs CUDA)")
    if min(s.people) < 1:
        raise ValueError(f"people counts must be >= 1, got {s.people}")
    return s


def _check_choices(plan: BenchPlan, batch: int) -> None:
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if not plan.models or set(plan.models) - set(MODELS):
        raise ValueError(f"models must be among {MODELS}, got {plan.models}")
    check_compile_mode(plan.compile_mode)


def render_clip(num_people: int, num_frames: int, height: int, width: int, seed: int = 0) -> list[Image.Image]:
    """T frames of ``num_people`` synthetic people walking over a textured background."""
    rng = np.random.default_rng(seed)
    bg = np.ascontiguousarray(background(rng, width, height)[PAN:PAN + height, PAN:PAN + width])
    figures = sorted((sample_figure(rng, width, height, False) for _ in range(num_people)),
                     key=lambda f: f.height)
    frames = []
    for t in range(num_frames):
        image, label = Image.fromarray(bg), Image.new("L", (width, height), 0)
        for p, fig in enumerate(figures):
            xy, z = figure_pose(fig, t)
            draw_figure(image, label, p % 250 + 1, fig, xy, z)
        frames.append(image)
    return frames


def _frozen(module: nn.Module, device: torch.device) -> nn.Module:
    module = module.to(device).eval()
    module.requires_grad_(False)
    return module


class Networks:
    """The networks of a run (random weights), built once, and their compiled versions."""

    def __init__(self, s: Settings) -> None:
        torch.manual_seed(0)
        cfg = load_config(s.config)
        model, _, post = build(cfg)
        t1 = build(load_config(s.config, ["model.num_frames=1"]))[0]
        self.nets: dict[str, nn.Module] = {"pavenet": _frozen(model, s.device),
                                           "pavenet_t1": _frozen(t1, s.device)}
        self.post = post
        self.num_frames = int(model.num_frames)
        self.two_stage = _frozen(TwoStagePose(*s.size, self.num_frames, s.crop), s.device)
        self.compile_mode = s.compile_mode
        self._compiled: dict[str, Any] = {}

    def _compile(self, fn: Callable) -> Callable:
        return torch.compile(fn, mode=self.compile_mode)

    def pavenet_fns(self, name: str, compiled: bool) -> tuple[Callable, Callable]:
        net = self.nets[name]
        if not compiled:
            return net.encode, net.decode
        if name not in self._compiled:
            self._compiled[name] = (self._compile(net.encode), self._compile(net.decode))
        return self._compiled[name]

    def two_stage_fn(self, compiled: bool) -> Callable:
        """The two-stage pipeline; compiled: its top-down model compiled, the detector eager."""
        if not compiled:
            return self.two_stage
        if "two_stage" not in self._compiled:
            top_down = self._compile(self.two_stage.top_down)
            self._compiled["two_stage"] = lambda clips, people: self.two_stage(clips, people, top_down)
        return self._compiled["two_stage"]


def _streaming_memory(net: nn.Module, encode: Callable, clips: torch.Tensor) -> Callable:
    """A function encoding the newest frame of each clip and returning the clip memories, the
    other T-1 frames coming from a cache encoded once (clip order kept)."""
    b, t, _, h, w = clips.shape
    cached = net.encode(clips[:, :t - 1].flatten(0, 1), clips.new_zeros(b * (t - 1), h, w, dtype=torch.bool))
    new_mask = clips.new_zeros(b, h, w, dtype=torch.bool)
    index = torch.arange(b * (t - 1), device=clips.device).view(b, t - 1)
    order = torch.cat([index, torch.arange(b, device=clips.device)[:, None] + b * (t - 1)], 1).flatten()

    def memory():
        return FrameMemory.cat([cached, encode(clips[:, t - 1], new_mask)]).select(order)
    return memory


def pavenet_step(nets: Networks, case: Case, frames: torch.Tensor) -> tuple[Callable, Callable]:
    """(full step: encode + decode + post-process, post-process alone) for a pavenet case."""
    net = nets.nets[case.model]
    encode, decode = nets.pavenet_fns(case.model, case.compiled)
    t, (h, w) = int(net.num_frames), frames.shape[-2:]
    clips = frames[-t:][None].expand(case.batch, -1, -1, -1, -1).contiguous()
    sizes = torch.tensor([[h, w]] * case.batch, device=frames.device)
    if case.mode == "streaming" and t > 1:
        memory = _streaming_memory(net, encode, clips)
    else:
        mask = clips.new_zeros(case.batch * t, h, w, dtype=torch.bool)

        def memory():
            return encode(clips.flatten(0, 1), mask)
    outputs = copy_outputs(decode(memory(), case.batch))
    return (lambda: nets.post(decode(memory(), case.batch), sizes)), (lambda: nets.post(outputs, sizes))


def _autocast(s: Settings, dtype: str):
    if dtype == "bfloat16":
        return torch.autocast(s.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _wrapped(fn: Callable, s: Settings, dtype: str, compiled: bool = False) -> Callable:
    """``fn`` under no_grad and the dtype's autocast; compiled calls of the CUDA-graph mode
    first mark a new step, so each call may overwrite the previous call's graph outputs."""
    new_step = compiled and s.compile_mode in GRAPH_MODES

    def run():
        if new_step:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.no_grad(), _autocast(s, dtype):
            return fn()
    return run


class Bench:
    """Measures cases, sharing rendered inputs and eager FLOP counts between rows."""

    def __init__(self, s: Settings, nets: Networks) -> None:
        self.s, self.nets = s, nets
        self.sync = device_sync(s.device)
        self.name = device_name(s.device)
        self._inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._flops: dict[tuple, int] = {}

    def inputs(self, people: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised pavenet frames, [0, 1] frames), each (T, 3, H, W), of ``people`` people."""
        if people not in self._inputs:
            images = render_clip(people, self.nets.num_frames, *self.s.size, seed=people)
            raw = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2)
            self._inputs[people] = (to_tensor(images).to(self.s.device),
                                    (raw.float() / 255.0).to(self.s.device))
        return self._inputs[people]

    def steps(self, case: Case, compiled: bool) -> tuple[Callable, Optional[Callable]]:
        norm, raw = self.inputs(case.people)
        variant = Case(**{**case.__dict__, "compiled": compiled})
        with torch.no_grad(), _autocast(self.s, case.dtype):
            if case.model == "two_stage":
                fn = self.nets.two_stage_fn(compiled)
                clips = raw[None].expand(case.batch, -1, -1, -1, -1).contiguous()
                return _wrapped(lambda: fn(clips, case.people), self.s, case.dtype, compiled), None
            step, post = pavenet_step(self.nets, variant, norm)
        return _wrapped(step, self.s, case.dtype, compiled), _wrapped(post, self.s, case.dtype)

    def flops(self, case: Case) -> int:
        key = (case.model, case.mode, case.people, case.batch)
        if key not in self._flops:
            self._flops[key] = count_flops(self.steps(case, compiled=False)[0])
        return self._flops[key]

    def measure(self, case: Case) -> dict:
        flops = self.flops(case) / case.batch
        step, post = self.steps(case, case.compiled)
        warmup = max(self.s.warmup, COMPILED_WARMUP) if case.compiled else self.s.warmup
        timing = time_callable(step, warmup, self.s.repeats, self.sync)
        post_ms = time_callable(post, 1, self.s.repeats, self.sync).median_ms if post else None
        per_frame_ms = timing.median_ms / case.batch
        rate, fraction = achieved(flops, per_frame_ms / 1e3, peak_flops(self.name, case.dtype))
        note = "T=1: streaming = recompute" if case.model == "pavenet_t1" else ""
        return {"model": case.model, "mode": case.mode, "people": case.people, "batch": case.batch,
                "dtype": case.dtype, "compile": case.compiled, "median_ms": timing.median_ms,
                "p90_ms": timing.p90_ms, "ms_per_frame": per_frame_ms,
                "frames_per_s": 1e3 / per_frame_ms, "gflops_per_frame": flops / 1e9,
                "tflops_per_s": rate / 1e12, "peak_fraction": fraction, "post_ms": post_ms, "note": note}


def cases(s: Settings) -> list[Case]:
    out = []
    for dtype in s.dtypes:
        for compiled in s.compile_modes:
            for batch in s.batches:
                for people in s.people:
                    for model, mode in (("pavenet", "streaming"), ("pavenet", "recompute"),
                                        ("pavenet_t1", "streaming"), ("two_stage", "per_frame")):
                        if model in s.models:
                            out.append(Case(model, mode, people, batch, dtype, compiled))
    return out


def notes(s: Settings, nets: Networks) -> list[str]:
    t = nets.num_frames
    out = [
        ("pavenet: frames rendered with N synthetic people at the input size. Its cost does not "
         "depend on the content: fixed query counts (num_queries, num_kept) and a fixed top-k in "
         "the post-processor, so its rows should be flat in N."),
        (f"streaming: encode the newest frame only, decode the T={t} clip from the cached memories "
         f"of the other {t - 1} frames (PoseEstimator cache=True); recompute: encode all {t} frames "
         "every step (cache=False). Both include the post-processor; post ms is it alone."),
        ("two_stage: Faster R-CNN R50-FPN on the key frame, output forced to N boxes, then "
         f"ResNet-50 + joint-token transformer head on {s.crop[0]}x{s.crop[1]} crops of the {t} "
         "frames per person (pavenet.bench.two_stage). Detector once per frame, nothing cached."),
        "pavenet_t1: the same network with model.num_frames=1.",
        ("All weights random (timing only). Inputs are tensors at the input size: decoding and "
         "resizing are excluded for every model."),
        ("FLOPs: torch.utils.flop_counter (matmul, conv, attention; grid_sample, roi_align and "
         "element-wise ops not counted). % peak only for known devices (NVIDIA datasheet, H100 "
         "SXM / H200: bf16 dense 989 TFLOP/s, fp32 non-tensor 67 TFLOP/s)."),
        "ms/frame = median ms / batch; frames/s = 1000 / ms/frame.",
    ]
    if True in s.compile_modes:
        out.append(f"compile (torch.compile mode {s.compile_mode!r}): pavenet's encode and decode "
                   "are compiled; the two-stage compiles its top-down model, its detector "
                   "(data-dependent NMS shapes) stays eager. Compiled rows get at least "
                   f"{COMPILED_WARMUP} warm-up calls (compilation).")
    return out


def _report(s: Settings, bench: Bench, nets: Networks, rows: list[dict]) -> dict:
    return {
        "device": str(s.device), "device_name": bench.name, "dtypes": list(s.dtypes),
        "input_size": list(s.size), "crop_size": list(s.crop), "config": str(s.config),
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "threads": torch.get_num_threads(), "repeats": s.repeats, "warmup": s.warmup,
        "notes": notes(s, nets), "skipped": s.skipped, "failed": s.failed, "rows": rows,
        "ratios": ratio_rows(rows, reference_people(list(s.people))), "spread": spread_rows(rows),
    }


def run_benchmark(plan: BenchPlan, progress: bool = True) -> dict:
    """Run the grid of ``plan``; ``bench.json`` and ``bench.md`` in ``plan.out`` are rewritten
    after every row, so an interrupted run keeps what it measured. A row that raises is listed
    under ``failed`` (eager) or ``skipped`` (compiled) and the run goes on."""
    if plan.threads:
        torch.set_num_threads(plan.threads)
    s = resolve(plan)
    nets = Networks(s)
    bench = Bench(s, nets)
    rows: list[dict] = []
    report = _report(s, bench, nets, rows)
    for case in progress_bar(cases(s), desc="bench", unit="row", disable=not progress):
        try:
            rows.append(bench.measure(case))
        except Exception as exc:
            where = s.skipped if case.compiled else s.failed
            where.append(f"{case.model} {case.mode} N={case.people} batch {case.batch} {case.dtype}"
                         f"{' compiled' if case.compiled else ''}: {type(exc).__name__}: {exc}")
        report = _report(s, bench, nets, rows)
        write_report(report, Path(plan.out))
    return report
