"""Speed benchmark pieces: the two-stage baseline's shapes and linear cost, the timing and FLOP
helpers (fake clock, no timing assertions) and ``pavenet bench --quick`` end to end."""
import json

import pytest
import torch
from torch import nn

from pavenet.bench.report import JSON_NAME, MARKDOWN_NAME, REPORT_KEYS, ROW_KEYS
from pavenet.bench.timing import Timing, achieved, count_flops, peak_flops, time_callable
from pavenet.bench.two_stage import TwoStagePose, grid_boxes
from pavenet.cli import main

SIZE, CROP = (64, 64), (64, 48)


@pytest.fixture(scope="module")
def two_stage():
    torch.manual_seed(0)
    model = TwoStagePose(*SIZE, num_frames=3, crop_size=CROP).eval()
    model.requires_grad_(False)
    clip = torch.rand(3, 3, *SIZE)
    return model, clip


@pytest.mark.parametrize("people", [1, 3])
def test_two_stage_returns_key_frame_joints_of_each_person(two_stage, people):
    model, clip = two_stage
    with torch.no_grad():
        out = model(clip, people)
        batched = model(torch.stack([clip, clip]), people)
    assert out.shape == (people, 15, 2)
    assert batched.shape == (2, people, 15, 2)
    boxes = grid_boxes(people, *SIZE)
    inside = (out >= boxes[:, None, :2] - 1e-4) & (out <= boxes[:, None, 2:] + 1e-4)
    assert inside.all()


@pytest.mark.parametrize("people", [1, 2, 7])
def test_forced_detector_output_has_exactly_n_boxes(two_stage, people):
    model, clip = two_stage
    with torch.no_grad():
        detections = model.detect(clip[1:2])
    boxes = model.person_boxes(detections, people)
    assert boxes.shape == (1, people, 4)
    assert torch.equal(boxes[0], grid_boxes(people, *SIZE))
    assert (boxes[..., 2:] > boxes[..., :2]).all()
    assert boxes[..., 0::2].min() >= 0 and boxes[..., 0::2].max() <= SIZE[1]
    assert boxes[..., 1::2].min() >= 0 and boxes[..., 1::2].max() <= SIZE[0]


def test_top_down_cost_grows_linearly_with_people(two_stage):
    model, clip = two_stage
    frames = clip[None]

    def flops(people):
        boxes = grid_boxes(people, *SIZE)[None]
        with torch.no_grad():
            return count_flops(lambda: model.top_down(frames, boxes))

    f1, f2, f3 = flops(1), flops(2), flops(3)
    assert f1 > 0
    assert f3 - f1 == 2 * (f2 - f1)
    assert f2 == 2 * f1


def test_flop_counter_of_a_linear_layer():
    layer = nn.Linear(7, 5)
    x = torch.randn(3, 7)
    assert count_flops(lambda: layer(x)) == 2 * 7 * 5 * 3


def test_time_callable_uses_the_injected_clock_and_sync():
    durations = iter([0.004, 0.001, 0.003, 0.010, 0.002])
    clock = {"now": 0.0}
    calls, syncs = [], []

    def timer():
        return clock["now"]

    def fn():
        calls.append(1)
        if len(calls) > 2:  # the two warm-up calls take no time
            clock["now"] += next(durations)

    timing = time_callable(fn, warmup=2, repeats=5, sync=lambda: syncs.append(1), timer=timer)
    assert len(calls) == 7 and len(syncs) == 6
    assert timing.times_ms == pytest.approx([4.0, 1.0, 3.0, 10.0, 2.0])
    assert timing.median_ms == pytest.approx(3.0)
    assert timing.p90_ms == pytest.approx(10.0)
    assert Timing([float(i) for i in range(1, 11)]).p90_ms == 9.0
    with pytest.raises(ValueError):
        time_callable(fn, repeats=0)


def test_peaks_known_only_for_listed_devices():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert peak_flops("NVIDIA H200", "float32") == 67e12
    assert peak_flops("NVIDIA H100 PCIe", "bfloat16") is None
    assert peak_flops("AMD EPYC", "float32") is None
    assert achieved(10**9, 0.5, None) == (2e9, None)
    assert achieved(10**9, 0.5, 4e9) == (2e9, 0.5)


def test_bench_cli_quick_on_cpu(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--device", "cpu", "--out", str(out), "--batch", "1"]) == 0
    report = json.loads((out / JSON_NAME).read_text())
    assert set(report) == set(REPORT_KEYS)
    assert report["device"] == "cpu" and report["input_size"] == [64, 64]
    assert report["dtypes"] == ["float32"] and any("bfloat16" in s for s in report["skipped"])
    rows = report["rows"]
    assert len(rows) == 2 * 4  # people 1 and 3, four models/modes, batch 1, float32, eager
    for row in rows:
        assert set(row) == set(ROW_KEYS)
        assert row["median_ms"] > 0 and row["gflops_per_frame"] > 0 and row["peak_fraction"] is None
    assert {(r["model"], r["mode"]) for r in rows} == {
        ("pavenet", "streaming"), ("pavenet", "recompute"), ("pavenet_t1", "streaming"),
        ("two_stage", "per_frame")}
    assert report["ratios"] and report["ratios"][0]["people"] == 3
    markdown = (out / MARKDOWN_NAME).read_text()
    assert "| model | mode | people |" in markdown and "two_stage" in markdown
    assert len(report["spread"]) == 4 and "Flatness in the number of people" in markdown
    assert not list(out.glob("*.tmp"))


def test_spread_rows_by_hand():
    from pavenet.bench.report import spread_rows

    def row(model, people, ms, batch=1):
        return {"model": model, "mode": "streaming", "dtype": "float32", "compile": False,
                "batch": batch, "people": people, "ms_per_frame": ms}

    rows = [row("pavenet", 50, 10.5), row("pavenet", 1, 10.0), row("pavenet", 10, 11.0),
            row("two_stage", 1, 20.0), row("pavenet", 1, 4.0, batch=8)]
    spread = spread_rows(rows)
    assert len(spread) == 1  # two_stage and batch 8 have one people count each
    got = spread[0]
    assert got["people"] == "1-50" and got["min_ms"] == 10.0 and got["max_ms"] == 11.0
    assert got["first_to_last_pct"] == pytest.approx(5.0)
    assert got["spread_pct"] == pytest.approx(10.0)


def test_bench_cli_reports_missing_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["bench", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "CUDA" in capsys.readouterr().err
    assert not (tmp_path / JSON_NAME).exists()


def test_failing_rows_are_listed_and_the_report_is_kept_after_every_row(tmp_path, monkeypatch, capsys):
    from pavenet.bench import runner

    measure = runner.Bench.measure
    calls = []

    def flaky(self, case):
        calls.append(case)
        if case.model == "two_stage":
            raise RuntimeError("detector exploded")
        if len(calls) == 6:
            assert len(json.loads((tmp_path / JSON_NAME).read_text())["rows"]) == 4
            raise KeyboardInterrupt
        return measure(self, case)

    monkeypatch.setattr(runner.Bench, "measure", flaky)
    with pytest.raises(KeyboardInterrupt):
        main(["bench", "--quick", "--device", "cpu", "--out", str(tmp_path), "--batch", "1"])
    report = json.loads((tmp_path / JSON_NAME).read_text())
    assert [(r["model"], r["people"]) for r in report["rows"]] == [
        ("pavenet", 1), ("pavenet", 1), ("pavenet_t1", 1), ("pavenet", 3)]
    assert report["failed"] == ["two_stage per_frame N=1 batch 1 float32: RuntimeError: detector exploded"]
    assert "Failed (eager rows that raised)" in (tmp_path / MARKDOWN_NAME).read_text()

    calls.clear()
    monkeypatch.setattr(runner.Bench, "measure", lambda self, case: flaky(self, case) if
                        case.model == "two_stage" else measure(self, case))
    assert main(["bench", "--quick", "--device", "cpu", "--out", str(tmp_path), "--batch", "1"]) == 1
    assert "FAILED: two_stage per_frame N=3" in capsys.readouterr().err
    assert len(json.loads((tmp_path / JSON_NAME).read_text())["rows"]) == 6


def test_compile_only_and_compile_modes_resolve():
    from pavenet.bench.runner import BenchPlan, resolve

    assert resolve(BenchPlan(device="cpu", quick=True)).compile_modes == (False,)
    assert resolve(BenchPlan(device="cpu", quick=True, compile=True)).compile_modes == (False, True)
    only = resolve(BenchPlan(device="cpu", quick=True, compile_only=True, compile_mode="reduce-overhead"))
    assert only.compile_modes == (True,) and only.compile_mode == "reduce-overhead"
    with pytest.raises(ValueError, match="compile mode"):
        resolve(BenchPlan(device="cpu", quick=True, compile_mode="fast"))
    assert resolve(BenchPlan(device="cpu", quick=True, batch=4, only_batch=True)).batches == (4,)
    assert resolve(BenchPlan(device="cpu", quick=True, batch=4)).batches == (1, 4)
    with pytest.raises(ValueError, match="models must be among"):
        resolve(BenchPlan(device="cpu", quick=True, models=("pavenet", "detr")))


def test_returned_report_is_the_written_one(tmp_path):
    from pavenet.bench.runner import BenchPlan, run_benchmark

    report = run_benchmark(BenchPlan(out=tmp_path, device="cpu", quick=True, people=(1,), models=("pavenet_t1",),
                                     dtypes=("float32",)), progress=False)
    assert len(report["rows"]) == 2  # batch 1 and the quick batch 2
    assert json.loads(json.dumps(report)) == json.loads((tmp_path / JSON_NAME).read_text())


def test_profile_step_sums_trace_kernels_by_kind():
    from pavenet.bench import profile as module

    trace = {"traceEvents": [
        {"cat": "kernel", "name": "_fwd_kernel", "dur": 300.0},
        {"cat": "kernel", "name": "triton_poi_fused_add_relu_0", "dur": 100.0},
        {"cat": "kernel", "name": "sm90_xmma_fprop_implicit_gemm_bf16", "dur": 1000.0},
        {"cat": "kernel", "name": "nvjet_hsh_128x256", "dur": 400.0},
        {"cat": "kernel", "name": "nvjet_hsh_128x256", "dur": 200.0},
        {"cat": "gpu_memcpy", "name": "Memcpy DtoD", "dur": 50.0},
        {"cat": "kernel", "name": "nms_kernel", "dur": 20.0},
        {"cat": "cpu_op", "name": "aten::conv2d", "dur": 5000.0},
        {"cat": "kernel", "name": "no duration"},
    ]}
    kernels = module.kernel_times(trace)
    assert kernels["nvjet_hsh_128x256"] == 600.0 and "aten::conv2d" not in kernels
    assert module.by_kind(kernels, steps=2) == {
        "convolution": 0.5, "matrix product": 0.3, "deformable attention": 0.15,
        "inductor fused": 0.05, "copy / fill": 0.025, "other": 0.01}
    assert list(module.by_kind(kernels, steps=2))[0] == "convolution"


def test_kernels_on_cpu_compare_reference_and_bags(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "kernels", "--repeats", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "| attention | dtype | pass | reference ms | bags ms | speed-up | fwd rel. diff |" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "ms |" not in line]
    assert [(r[0].strip().split(" (")[0], r[2].strip()) for r in rows] == [
        (name, p) for name in ("encoder", "pose decoder", "joint decoder") for p in ("fwd", "fwd+bwd")]
    assert "encoder (Q=S=765, P=4)" in rows[0][0]
    for row in rows:
        reference, bags, ratio, diff = (float(row[i].strip().rstrip("x")) for i in (3, 4, 5, 6))
        assert ratio == pytest.approx(reference / bags, rel=0.01, abs=0.01)
        assert diff < 1e-5


def test_kernels_on_cuda_without_a_device_is_an_error(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "kernels", "--device", "cuda"]) == 2
    assert "--device cuda but no CUDA device is available" in capsys.readouterr().err
