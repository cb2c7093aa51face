"""deploy/jetson/config.example.yaml must load and document every runtime option."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from edge_runtime.runtime_config import RuntimeConfig, load_runtime_config

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "jetson" / "config.example.yaml"


def _paths(cls, prefix=""):
    """Dotted keys of a config dataclass; nested sections are dataclass-valued defaults."""
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            yield from _paths(type(default), key + ".")
        else:
            yield key


def _yaml_paths(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, dict):
            yield from _yaml_paths(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def test_example_loads():
    cfg = load_runtime_config(EXAMPLE)
    assert cfg.backend.name == "trt" and cfg.publish.options.qos == 1


def test_every_option_documented():
    documented = set(_yaml_paths(yaml.safe_load(EXAMPLE.read_text())))
    assert set(_paths(RuntimeConfig)) - documented == set()
