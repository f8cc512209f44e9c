"""The command line of the small test model, and the check that a command failed with one line."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "synthetic_tiny.yaml")
SMALL = ["model.hidden_dim=32", "model.num_heads=2", "model.enc_layers=1", "model.ffn_dim=64",
         "model.num_queries=8", "model.num_kept=4", "model.pose_dec_layers=1", "model.joint_dec_layers=1",
         "model.refine_hidden=[32]", "model.embed_dim=16", "model.backbone.name=resnet10t",
         "data.train_short_side=[64,64]", "data.train_max_size=64", "data.test_short_side=64",
         "data.test_max_size=64", "data.num_workers=0", "train.amp=false"]


def one_line(capsys, command: str) -> str:
    """The one ``pavenet COMMAND: ...`` line a failed command wrote to stderr (no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"pavenet {command}: ")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]
