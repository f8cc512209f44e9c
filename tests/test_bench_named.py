"""``pavenet bench NAME``: the named benchmarks' help, the dispatch, a small real ``eval`` run and
the ``threads`` benchmark's subprocess commands (faked, nothing trained). No timing assertions."""
import importlib
import json
import re
import sys
from types import SimpleNamespace

import pytest

from pavenet.bench import BENCHMARKS
from pavenet.bench import eval as eval_bench
from pavenet.bench import threads as threads_bench
from pavenet.cli import main


def test_bench_help_lists_every_named_benchmark(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out  # the latency benchmark's options stay on pavenet bench
    for name, line in BENCHMARKS.items():
        assert re.search(rf"^  {name} +{re.escape(line)}$", out, re.M), name


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_each_named_benchmark_has_its_own_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", name, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: pavenet bench {name} ")
    assert BENCHMARKS[name].split()[0] in out


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_listed_line_is_the_module_docstring(name):
    module = importlib.import_module(f"pavenet.bench.{name}")
    assert module.__doc__.splitlines()[0] == BENCHMARKS[name]
    assert callable(module.main) and callable(module.build_parser)


def test_latency_options_before_a_name_are_refused(capsys):
    assert main(["bench", "--device", "cpu", "eval", "--frames", "2"]) == 2
    err = capsys.readouterr().err
    assert "--device before eval" in err and "Traceback" not in err


def test_unknown_benchmark_name_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "nosuch"])
    assert exit_.value.code == 2
    assert "invalid choice: 'nosuch'" in capsys.readouterr().err


def test_eval_set_has_the_asked_counts(tmp_path):
    eval_bench.write_set(tmp_path, 3, 4, 2, seed=0)
    gt_files = sorted((tmp_path / "gt").glob("*.json"))
    assert [f.name for f in gt_files] == sorted(f.name for f in (tmp_path / "pred").glob("*.json"))
    assert len(gt_files) == 3
    for path in gt_files:
        gt = json.loads(path.read_text())
        pred = json.loads((tmp_path / "pred" / path.name).read_text())
        assert len(gt["images"]) == 4 and len(gt["annotations"]) == 4 * 2
        assert 4 <= len(pred["annotations"]) <= 4 * 2  # a track given a taken id replaces that one
        assert {a["image_id"] for a in pred["annotations"]} <= {im["id"] for im in gt["images"]}


def test_bench_eval_runs_small_and_prints_sane_scores(capsys):
    assert main(["bench", "eval", "--sequences", "2", "--frames", "3", "--people", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    pattern = r"strict=(True|False): [\d.]+ s wall, [\d.]+ s CPU  mAP ([\d.]+)  MOTA (-?[\d.]+)"
    found = [re.fullmatch(pattern, line) for line in lines]
    assert all(found) and [m[1] for m in found] == ["False", "True"], lines
    for m in found:
        assert 50.0 < float(m[2]) <= 100.0  # predictions are the truth with 6 px noise
        assert -100.0 <= float(m[3]) <= 100.0


def test_threads_runs_pavenet_through_this_interpreter(tmp_path, monkeypatch, capsys):
    calls = []
    clock = iter(range(1, 1000))
    monkeypatch.setattr(threads_bench.subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw)))
    monkeypatch.setattr(threads_bench, "busy_processes", lambda count: [])
    monkeypatch.setattr(threads_bench, "time", SimpleNamespace(
        monotonic=lambda: float(next(clock)), sleep=lambda s: None, strftime=lambda f: "2026-01-01"))
    out = tmp_path / "results" / "threads.json"
    assert threads_bench.main(["--out", str(out), "--steps", "2", "--loads", "0"]) == 0
    commands = [cmd for cmd, _ in calls]
    assert [cmd[:4] for cmd in commands] == [[sys.executable, "-m", "pavenet", "synth"]] + [
        [sys.executable, "-m", "pavenet", "train"]] * 4
    assert commands[-1][-4:] == ["--processes", "2", "--batch-size", "1"]
    assert all("cwd" not in kw for _, kw in calls)
    assert all("train.max_steps=2" in cmd for cmd in commands[1:])
    assert commands[1][4] == "synthetic_tiny"  # a shipped config, by name (works after a wheel install)
    report = json.loads(out.read_text())
    assert report["steps"] == 2 and set(report["seconds"]) == set(threads_bench.SETTINGS)
    assert all(s == {"0": 1.0} for s in report["seconds"].values())
    assert report["table"] in capsys.readouterr().out


def test_keypoint_difference_matches_people_by_hand():
    """Frame 0: two people each way, found swapped and 3 px / 4 px off; frame 1: one person
    against none (unmatched); frame 2: nobody."""
    import numpy as np

    from pavenet.bench.onnx import keypoint_difference
    from pavenet.infer.results import FramePrediction, PersonPrediction

    def person(x, y, track=1):
        kp = np.zeros((15, 3))
        kp[:, 0], kp[:, 1], kp[:, 2] = x + np.arange(15), y, 1.0
        return PersonPrediction(track, kp, 0.9)

    ref = [FramePrediction(0, [person(10, 10), person(100, 50)]), FramePrediction(1, [person(5, 5)]),
           FramePrediction(2, [])]
    other = [FramePrediction(0, [person(100, 53), person(14, 10)]), FramePrediction(1, []), FramePrediction(2, [])]
    diff = keypoint_difference(ref, other)
    assert diff["matched_people"] == 2 and diff["unmatched_people"] == 1
    assert diff["mean_px"] == pytest.approx(3.5) and diff["max_px"] == pytest.approx(4.0)
