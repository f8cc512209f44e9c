"""torchrun with 2 CPU processes (gloo): predict and test share the inputs and give the files of
one process, byte for byte; rank 0 alone prints the summary."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pavenet.cli import main
from pavenet.config import config_to_dict, load_config
from pavenet.data.synthetic import generate_video, write_dataset
from pavenet.infer.sharding import gather, rank_and_world, shard, unshard
from pavenet.infer.video_writer import VideoWriter
from pavenet.model import build
from pavenet.runtime.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "synthetic_tiny.yaml")
SMALL = ["model.hidden_dim=32", "model.num_heads=2", "model.enc_layers=1", "model.ffn_dim=64",
         "model.num_queries=8", "model.num_kept=4", "model.pose_dec_layers=1", "model.refine_hidden=[32]",
         "model.embed_dim=16", "model.backbone.name=resnet10t", "data.test_short_side=64",
         "data.test_max_size=96", "postprocess.top_k=4", "postprocess.score_threshold=0.0"]


def test_shard_gives_each_item_to_one_rank_and_unshard_restores_the_order():
    items = list("abcdefg")
    parts = [shard(items, rank, 3) for rank in range(3)]
    assert parts == [["a", "d", "g"], ["b", "e"], ["c", "f"]]
    assert unshard(parts) == items and unshard([shard(items, 0, 1)]) == items
    assert unshard([[], []]) == [] and shard(items[:1], 1, 2) == []
    assert gather({"x": 1}) == [{"x": 1}] and rank_and_world() == (0, 1)  # no process group
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        shard(items, 2, 2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    cfg = load_config(CONFIG, SMALL)
    model, _, _ = build(cfg)
    with torch.no_grad():  # break the symmetric initialisation so queries differ
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("sharded")
    ckpt = save_checkpoint(folder / "run", 0, model.eval().state_dict(), {"config": config_to_dict(cfg), "step": 0})
    videos = []
    for seed, length in enumerate((6, 4, 5)):
        frames, _ = generate_video(seed, length, (96, 64), 2, "easy")
        videos.append(folder / f"v{seed}.mp4")
        with VideoWriter(videos[-1], 25) as writer:
            for frame in frames:
                writer.write(frame)
    return folder, ckpt, videos


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "pavenet", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _one_process(args: list[str]) -> int:
    threads = torch.get_num_threads()
    try:
        return main(args)
    finally:
        torch.set_num_threads(threads)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_processes_predict_the_files_of_one(setup, capsys):
    folder, ckpt, videos = setup
    common = ["--weights", str(ckpt), "--format", "posetrack", "coco", "csv", "--device", "cpu",
              "--threads", "1", "--score-threshold", "0", "--batch-size", "2"]
    assert _one_process(["predict", *map(str, videos), "--out", str(folder / "one"), *common]) == 0
    one = capsys.readouterr().out
    two = _torchrun("predict", *map(str, videos), "--out", str(folder / "two"), *common, cwd=folder).stdout
    assert len(_files(folder / "one")) == 9 and _files(folder / "two") == _files(folder / "one")
    assert two.count("threads: 1 (--threads") == 2  # two processes ran
    assert two.count("track summary:") == 1 and two.count("  all (3 inputs): 15 frames") == 1
    for name in ("v0", "v1", "v2"):  # each input predicted once, by one process
        assert two.count(f"  {name}: ") == 1 and two.count(f"{name}.json\n") == 1
        summary = next(line for line in one.splitlines() if line.startswith(f"  {name}: "))
        assert summary.split(" frames/s")[0].rsplit(", ", 1)[0] in two  # the same tracks and people


def test_two_processes_test_a_split_like_one(setup):
    folder, ckpt, _ = setup
    data = folder / "data"
    write_dataset(data, videos=1, frames=5, size=(96, 64), max_persons=2, seed=3, val_videos=3)
    common = ["--weights", str(ckpt), "--set", *SMALL, f"data.root={data}", "--device", "cpu", "--threads", "1"]
    assert _one_process(["test", CONFIG, "--out", str(folder / "test_one"), *common]) == 0
    two = _torchrun("test", CONFIG, "--out", str(folder / "test_two"), *common, cwd=folder).stdout
    predictions = _files(folder / "test_one" / "predictions")
    assert len(predictions) == 3 and _files(folder / "test_two" / "predictions") == predictions
    assert (folder / "test_two" / "metrics.json").read_bytes() == (folder / "test_one" / "metrics.json").read_bytes()
    assert two.count("predictions in ") == 1  # rank 0 evaluates and reports
