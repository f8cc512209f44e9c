"""One command-line convention for every subcommand (issue 25, item 4), checked by walking every
parser: ``pavenet COMMAND`` and ``pavenet bench NAME``."""
from __future__ import annotations

import argparse
import importlib
import re

import pytest

from cli_helpers import one_line
from pavenet.bench import BENCHMARKS
from pavenet.cli import COMMANDS, build_parser, fail, main
from pavenet.cli.arguments import DefaultFolder, numbered_folder, output_folder
from pavenet.runtime.arguments import HelpFormatter, Number, Parser

#: the arguments each subcommand needs besides the one under test
REQUIRED = {"synth": ["out"], "train": ["cfg"], "test": ["cfg", "--weights", "w"], "eval": ["gt", "pred"],
            "predict": ["in", "--weights", "w"], "demo": [], "export": ["--weights", "w"], "bench": [],
            "convert": ["src", "--out", "o"]}
#: commands (and named benchmarks) that batch their work and so take --batch-size
BATCHED = {"train", "test", "predict", "bench", "bench kernels", "bench onnx", "bench predict"}


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _all_parsers() -> dict[str, tuple[argparse.ArgumentParser, list[str]]]:
    """'synth', ..., 'bench eval', ... -> (parser, the arguments it needs)."""
    found = {name: (p, REQUIRED[name]) for name, p in _subcommands().items()}
    for name in BENCHMARKS:
        module = importlib.import_module(f"pavenet.bench.{name}")
        found[f"bench {name}"] = (module.build_parser(f"pavenet bench {name}"), [])
    return found


PARSERS = _all_parsers()


def _value_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.nargs != 0 and not a.required
            and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


def test_every_command_is_walked():
    assert set(_subcommands()) == set(COMMANDS)
    assert {name for name in PARSERS if name.startswith("bench ")} == {f"bench {n}" for n in BENCHMARKS}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_each_command_has_a_description_and_an_example(name):
    parser, _ = PARSERS[name]
    assert isinstance(parser, Parser) and issubclass(parser.formatter_class, HelpFormatter)
    assert parser.description and len(parser.description) > 20
    epilog = parser.epilog or ""
    assert re.search(r"^examples?:$", epilog, re.M), epilog
    assert f"  pavenet {name} " in epilog or f"  pavenet {name}\n" in epilog + "\n"
    text = parser.format_help()
    assert "example" in text and parser.description.split()[0] in text


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_help_shows_its_default_once(name):
    parser, _ = PARSERS[name]
    formatter = parser.formatter_class(parser.prog)
    for action in _value_options(parser):
        shown = formatter._get_help_string(action)
        assert "default" in shown.lower(), (name, action.option_strings)
        assert shown.lower().count("default:") <= 1 and shown.count("(default") <= 1, (name, shown)


def test_defaults_are_shown_as_they_are_typed():
    help_text = {name: " ".join(PARSERS[name][0].format_help().split()) for name in ("predict", "synth", "bench")}
    assert "windows per forward pass (default: 4)" in help_text["predict"]
    joint = "(default: 0.05, or 0 for a checkpoint post-processed with the released rule, postprocess.mode official)"
    assert help_text["predict"].count(joint) == 1 and "(default: None)" not in help_text["predict"]
    assert "--size H W frame size, height and width" in help_text["synth"]
    assert "(default: 256 256)" in help_text["synth"]
    assert "(default: easy)" in help_text["synth"]
    assert "--batch-size BATCH, --batch BATCH" in help_text["bench"]


def _numeric_actions():
    for name, (parser, required) in sorted(PARSERS.items()):
        for action in _value_options(parser):
            if isinstance(action.type, Number) or action.type in (int, float):
                yield pytest.param(name, action, required, id=f"{name} {action.option_strings[0]}")


@pytest.mark.parametrize("name, action, required", list(_numeric_actions()))
def test_numbers_are_checked_when_parsing(name, action, required, capsys):
    parser = PARSERS[name][0]
    assert isinstance(action.type, Number), f"{name} {action.option_strings[0]}: a bare {action.type}"
    flag, kind = action.option_strings[0], action.type
    width = action.nargs if isinstance(action.nargs, int) else 1

    def parse(value: str):
        return parser.parse_args([*required, flag, *([value] * width)])

    bad = ["abc", "nan", "inf"]
    if kind.minimum is not None:
        bad.append(str(kind.minimum - 1) if kind.kind is int else "-1e-9" if kind.minimum == 0 else "0")
    if kind.maximum is not None:
        bad.append(str(kind.maximum + 1))
    for value in bad:
        with pytest.raises(SystemExit) as exit_:
            parse(value)
        assert exit_.value.code == 2, (flag, value)
        assert f"argument {flag}" in capsys.readouterr().err
    good = kind.kind(kind.minimum if kind.minimum is not None else 0)
    assert getattr(parse(str(good)), action.dest) in (good, [good] * width)


@pytest.mark.parametrize("name", sorted(BATCHED))
def test_batched_commands_take_batch_size(name):
    parser, required = PARSERS[name]
    assert "--batch-size" in parser._option_string_actions
    action = parser._option_string_actions["--batch-size"]
    assert isinstance(action.type, Number) and action.type.minimum == 1
    args = parser.parse_args([*required, "--batch-size", "3"])
    assert getattr(args, action.dest) in (3, [3])


def test_older_batch_spellings_are_still_accepted():
    assert build_parser().parse_args(["bench", "--batch", "5"]).batch == 5
    assert PARSERS["bench kernels"][0].parse_args(["--batch", "2"]).batch == 2


def test_misspelled_subcommand_gets_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predcit", "clip.mp4"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "pavenet: error: argument COMMAND: invalid choice: 'predcit'" in err
    assert "did you mean 'predict'?" in err


@pytest.mark.parametrize("argv, command, wrong, right", [
    (["predict", "in", "--weights", "w", "--batch-sise", "2"], "predict", "--batch-sise 2", "--batch-size"),
    (["synth", "out", "--max-persns", "2"], "synth", "--max-persns 2", "--max-persons"),
    (["eval", "gt", "pred", "--per-seqence"], "eval", "--per-seqence", "--per-sequence"),
    (["bench", "--quikc"], "bench", "--quikc", "--quick"),
    (["bench", "--warmpu", "1"], "bench", "--warmpu 1", "--warmup"),
])
def test_misspelled_option_is_reported_by_its_command_with_a_suggestion(argv, command, wrong, right, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert one_line(capsys, command) == (f"pavenet {command}: error: unrecognized arguments: {wrong} "
                                         f"(did you mean {right}?)")


def test_misspelled_option_of_a_named_benchmark_and_a_choice(capsys):
    with pytest.raises(SystemExit) as exit_:
        PARSERS["bench eval"][0].parse_args(["--sequencse", "2"])
    assert exit_.value.code == 2
    assert "pavenet bench eval: error: unrecognized arguments: --sequencse 2 (did you mean --sequences?)" \
        in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "in", "--weights", "w", "--format", "cocoo"])
    assert "invalid choice: 'cocoo' (choose from 'posetrack', 'coco', 'csv'); did you mean 'coco'?" \
        in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nothing close: no suggestion
        main(["predict", "in", "--weights", "w", "--zzzzzz"])
    assert capsys.readouterr().err.rstrip().endswith("unrecognized arguments: --zzzzzz")


@pytest.mark.parametrize("argv, want", [
    (["synth", "out", "--size", "64", "48"], [64, 48]),
    (["synth", "out", "--size", "48x64"], [64, 48]),  # the older WxH spelling: width first
    (["synth", "--size=48x64", "out"], [64, 48]),
    (["synth", "--size", "48X64", "out"], [64, 48]),
    (["export", "--weights", "w", "--size", "1333x800"], [800, 1333]),
    (["bench", "--crop", "192x256"], [256, 192]),
])
def test_sizes_are_height_width_and_wxh_is_accepted(argv, want):
    args = build_parser().parse_args(argv)
    assert (args.crop if "--crop" in argv else args.size) == want


def test_sizes_are_checked(capsys):
    for argv in (["synth", "out", "--size", "16", "64"], ["export", "--weights", "w", "--size", "31x64"],
                 ["synth", "out", "--size", "64"]):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(argv)
        assert exit_.value.code == 2
        assert "argument --size" in capsys.readouterr().err


def test_synth_writes_frames_of_the_asked_height_and_width(tmp_path):
    from PIL import Image

    assert main(["synth", str(tmp_path), "--videos", "0", "--val-videos", "1", "--frames", "1",
                 "--size", "48", "64"]) == 0
    frame = next((tmp_path / "images" / "val").rglob("*.jpg"))
    assert Image.open(frame).size == (64, 48)  # PIL: (width, height)


def test_numbered_output_folders(tmp_path):
    base = tmp_path / "runs" / "predict"
    assert numbered_folder(base) == base and base.is_dir()
    assert numbered_folder(base) == tmp_path / "runs" / "predict2"
    assert output_folder(DefaultFolder(str(base)), exist_ok=False) == tmp_path / "runs" / "predict3"
    assert output_folder(DefaultFolder(str(base)), exist_ok=True) == base
    explicit = tmp_path / "mine"
    assert output_folder(str(base), exist_ok=False) == base  # a folder given on the command line: as it is
    assert output_folder(str(explicit)) == explicit and not explicit.exists()
    assert output_folder(None, default=tmp_path / "runs" / "test_val") == tmp_path / "runs" / "test_val"
    assert output_folder(None, default=tmp_path / "runs" / "test_val") == tmp_path / "runs" / "test_val2"


def test_out_defaults_mark_themselves_as_not_given():
    parser = build_parser()
    args = parser.parse_args(["predict", "in", "--weights", "w"])
    assert isinstance(args.out, DefaultFolder) and args.out == "runs/predict" and not args.exist_ok
    args = parser.parse_args(["predict", "in", "--weights", "w", "--out", "runs/predict", "--exist-ok"])
    assert not isinstance(args.out, DefaultFolder) and args.exist_ok
    assert parser.parse_args(["test", "cfg", "--weights", "w"]).out is None  # runs/test_<split>, worked out in run
    assert isinstance(parser.parse_args(["demo"]).out, DefaultFolder)
    assert parser.parse_args(["train", "cfg"]).out is None  # train keeps its own --out / --resume rules


def test_bench_numbers_its_default_folder_unless_exist_ok(tmp_path, monkeypatch, capsys):
    import pavenet.bench.runner as runner

    plans = []
    monkeypatch.setattr(runner, "run_benchmark",
                        lambda plan: plans.append(plan.out) or {"ratios": [], "skipped": [], "failed": []})
    monkeypatch.chdir(tmp_path)
    for extra in ([], [], ["--exist-ok"]):
        assert main(["bench", "--quick", "--device", "cpu", *extra]) == 0
    assert [str(p) for p in plans] == ["runs/bench", "runs/bench2", "runs/bench"]
    assert "wrote runs/bench2/bench.md" in capsys.readouterr().out
    assert main(["bench", "--quick", "--device", "cpu", "--out", "runs/bench"]) == 0
    assert str(plans[-1]) == "runs/bench"


def test_demo_numbers_its_default_folder(tmp_path, monkeypatch):
    import torch

    import pavenet.demo

    outs = []
    monkeypatch.setattr(pavenet.demo, "run_demo", lambda plan: outs.append(plan.out))
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        for _ in range(2):
            assert main(["demo", "--threads", str(threads)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert [str(p) for p in outs] == ["runs/demo", "runs/demo2"]


def test_errors_have_one_prefix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert fail("predict", "something is wrong") == 2
    assert capsys.readouterr().err == "pavenet predict: error: something is wrong\n"
    assert main(["eval", "--coco", "--strict", "gt.json", "res.json"]) == 2
    assert one_line(capsys, "eval").startswith("pavenet eval: error: --coco cannot be combined")
    assert main(["bench", "--device", "cpu", "--config", str(tmp_path / "none.yaml")]) == 2
    assert one_line(capsys, "bench").startswith(f"pavenet bench: error: {tmp_path / 'none.yaml'}")
    assert not (tmp_path / "runs").exists()
