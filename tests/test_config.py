from pathlib import Path

import pytest

from pavenet.config import Config, ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_defaults_are_published_sizes():
    cfg = Config()
    assert cfg.model.hidden_dim == 256 and cfg.model.num_queries == 300
    assert (cfg.matcher.cost_class, cfg.matcher.cost_keypoint, cfg.matcher.cost_oks) == (2.0, 70.0, 7.0)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.model.num_frames >= 1


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  hiden_dim: 128\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*model\.hiden_dim"):
        load_config(p)


def test_wrong_type_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  backbone:\n    frozen_bn: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*model\.backbone\.frozen_bn.*bool"):
        load_config(p)
    p.write_text("matcher:\n  mode: frames\n")
    with pytest.raises(ConfigError, match=r"matcher\.mode"):
        load_config(p)


def test_int_accepted_for_float_but_not_reverse(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 1\n")
    assert load_config(p).train.lr == 1.0
    p.write_text("train:\n  lr: 1e-4\n")  # YAML 1.1 reads this as a string
    assert load_config(p).train.lr == pytest.approx(1e-4)
    p.write_text("train:\n  lr: fast\n")
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(p)
    p.write_text("model:\n  hidden_dim: 1.5\n")
    with pytest.raises(ConfigError, match="hidden_dim"):
        load_config(p)


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  hidden_dim: 64\n  num_queries: 10\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nmodel:\n  num_queries: 20\n")
    cfg = load_config(tmp_path / "child.yaml", ["model.num_frames=5", "train.lr=0.001"])
    assert (cfg.model.hidden_dim, cfg.model.num_queries, cfg.model.num_frames) == (64, 20, 5)
    assert cfg.train.lr == pytest.approx(0.001)
    with pytest.raises(ConfigError, match="model.nope"):
        load_config(tmp_path / "child.yaml", ["model.nope=1"])


@pytest.mark.parametrize("command", ["demo", "train", "test", "export"])
def test_repeated_set_options_accumulate(command):
    from pavenet.cli import build_parser

    config = ["configs/synthetic_tiny.yaml"]
    extra = {"demo": [], "train": config, "test": [*config, "--weights", "w"], "export": [*config, "--weights", "w"]}
    extra = extra[command]
    parser = build_parser()
    argv = [command, *extra, "--set", "a=1", "b=2", "--set", "c=3"]
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"pavenet {' '.join(argv)} did not parse")
    assert args.set == ["a=1", "b=2", "c=3"]
