"""Typed configuration: dataclasses loaded from YAML with strict checking.

Every section is a dataclass with defaults (:mod:`pavenet.config_schema`, re-exported here); a
YAML file only lists what differs.
Unknown keys and values of the wrong type raise :class:`ConfigError` naming the
dotted key and the file. ``--set a.b=value`` overrides use the same checks. The configs
shipped in ``pavenet/configs`` load by name (``load_config("pavenet_r50")``) from anywhere.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from pavenet.config_rules import problems
from pavenet.config_schema import (BackboneConfig, Config, DataConfig, LossConfig, MatcherConfig, ModelConfig,
                                   PostprocessConfig, TrainConfig, VepeConfig)
from pavenet.errors import PavenetError
from pavenet.runtime.files import atomic_open

__all__ = ["BackboneConfig", "CONFIG_DIR", "Config", "ConfigError", "DataConfig", "LossConfig", "MatcherConfig",
           "ModelConfig", "PostprocessConfig", "TrainConfig", "VepeConfig", "apply_overrides", "build_dataclass",
           "config_from_dict", "config_names", "config_path", "config_to_dict", "load_config", "parse_overrides",
           "read_yaml", "save_config", "validate"]

#: the configs shipped with pavenet, loadable by name
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(PavenetError, ValueError):
    """A configuration file or override is invalid."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return the typed value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {type(value).__name__}")
        return build_dataclass(tp, value, source, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key, source)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list, got {type(value).__name__}")
        return [_convert(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be a bool, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be an int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{source}: '{key}' must be a float, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{key}' must be a float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: '{key}' has unsupported type {_type_name(tp)}")


def build_dataclass(cls: type, data: dict, source: str, prefix: str = "") -> Any:
    """An instance of the dataclass ``cls`` from ``data``, strictly checked (unknown keys and wrong
    types raise :class:`ConfigError` naming ``source`` and the dotted key)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}' (valid: {sorted(names)})")
    kwargs = {k: _convert(v, hints[k], prefix + k, source) for k, v in data.items()}
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: Path, what: str = "config") -> Any:
    """What a YAML file holds (an empty file: {}); :class:`ConfigError` naming the file when it
    is missing (``"{what} file not found"``) or malformed."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from exc


def _read_yaml(path: Path) -> dict:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = data.pop("_base_", None)
    if base is not None:
        data = _merge(_read_yaml(path.parent / base), data)
    return data


def parse_overrides(overrides: list[str]) -> dict:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict, values parsed as YAML scalars."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set: expected key=value, got '{item}'")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def validate(cfg: Config, source: str) -> Config:
    """``cfg`` when every value is in range and the network can be built from it; else
    :class:`ConfigError` naming ``source`` and the key (see :mod:`pavenet.config_rules`)."""
    found = problems(cfg)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ConfigError(f"{source}: {found[0]}{more}")
    return cfg


def config_from_dict(data: dict, source: str = "<dict>") -> Config:
    return validate(build_dataclass(Config, data, source), source)


def config_names() -> list[str]:
    """The names of the shipped configs (``pavenet/configs/NAME.yaml``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(config: str | Path) -> Path:
    """The YAML file of ``config``: a path to a file, or the name of a shipped config
    (``pavenet_r50`` or ``pavenet_r50.yaml``); raises :class:`ConfigError` otherwise."""
    path = Path(config)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml")
    shipped = CONFIG_DIR / f"{name}.yaml"
    if str(path) not in (name, path.name):  # a path with folders: a file of the user's
        hint = f" (the shipped config of that name is '{name}')" if shipped.is_file() else ""
        raise ConfigError(f"{config}: config file not found{hint}")
    if shipped.is_file():
        return shipped
    close = difflib.get_close_matches(name, config_names(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"{config}: config file not found, and not the name of a shipped config "
                      f"({', '.join(config_names())}){hint}")


def apply_overrides(cfg: Config, overrides: list[str], source: str) -> Config:
    """``cfg`` with ``--set`` overrides applied and checked."""
    merged = _merge(config_to_dict(cfg), parse_overrides(overrides))
    return validate(build_dataclass(Config, merged, "--set"), f"{source} with --set")


def load_config(config: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config by path or shipped name (``_base_: other.yaml`` inherits) and apply
    ``--set`` overrides; without ``config``, the defaults."""
    if config is None:
        data, source = {}, "<defaults>"
    else:
        path = config_path(config)
        data, source = _read_yaml(path), str(path)
    cfg = build_dataclass(Config, data, source)
    if overrides:
        return apply_overrides(cfg, overrides, source)
    return validate(cfg, source)


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    with atomic_open(path) as f:
        f.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
