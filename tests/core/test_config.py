from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from edge_runtime.config import apply_overrides, from_mapping, load_config, to_dict
from edge_runtime.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    rank: int = 8
    dropout: float = 0.0
    towers: tuple[str, ...] = ("vision", "text")


@dataclass(frozen=True)
class Outer:
    name: str
    mode: Literal["a", "b"] = "a"
    inner: Inner = field(default_factory=Inner)
    limit: int | None = None

    def __post_init__(self):
        if self.limit is not None and self.limit < 0:
            raise ConfigError("limit must be >= 0")


def test_builds_nested_and_coerces():
    cfg = from_mapping(Outer, {"name": "x", "inner": {"rank": 4, "dropout": 1, "towers": ["text"]}})
    assert cfg.inner == Inner(rank=4, dropout=1.0, towers=("text",))
    assert to_dict(cfg)["inner"]["towers"] == ["text"]


def test_unknown_key_named_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'inner.rnak' \(did you mean 'rank'\?\)"):
        from_mapping(Outer, {"name": "x", "inner": {"rnak": 4}})


@pytest.mark.parametrize(
    "data, pattern",
    [
        ({}, "missing required config key 'name'"),
        ({"name": "x", "mode": "c"}, "'mode' must be one of"),
        ({"name": "x", "inner": {"rank": "8"}}, "'inner.rank' must be an integer"),
        ({"name": "x", "inner": {"rank": True}}, "'inner.rank' must be an integer"),
        ({"name": "x", "limit": -1}, "limit must be >= 0"),
    ],
)
def test_bad_values(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        from_mapping(Outer, data)


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: base\ninner:\n  rank: 2\n")
    cfg = load_config(Outer, p, ["inner.rank=16", "mode=b", "limit=3"])
    assert (cfg.inner.rank, cfg.mode, cfg.limit, cfg.name) == (16, "b", 3, "base")


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        apply_overrides({}, ["justakey"])


def test_bad_yaml_is_one_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Outer, p)
    assert "cannot parse config file" in str(exc.value) and "\n" not in str(exc.value)
