"""The command-line flags that set runtime-config keys, shared by `run` and `bench`.

One table maps each flag to its dotted key in RuntimeConfig (edge_runtime/runtime_config.py),
so both commands spell a flag the same way and resolve it with the same precedence:
flag > `--set key=value` > the `--config` file > the dataclass defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_runtime.runtime_config import RuntimeConfig


def _table_help(package: str) -> str:
    """`uri_help()` of a seam package (its registry table, one row per scheme), escaped for
    argparse. Imported when a parser is built, so a new table row shows in `--help`."""
    import importlib

    return importlib.import_module(package).uri_help().replace("%", "%%")


def _backend_help() -> str:
    """The backends' table (built-ins and installed plug-ins) for `--backend` help."""
    from edge_runtime.backends import backend_help

    return backend_help().replace("%", "%%")


@dataclass(frozen=True)
class ConfigFlag:
    """One flag that sets one runtime-config key (`--backend` -> `backend.name`)."""

    option: str
    key: str
    help: str | Callable[[], str]  # a callable is read when the parser is built (seam tables)
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        """The argparse attribute the flag's value lands in (`--trusted-keys` -> `trusted_keys`)."""
        return self.option.lstrip("-").replace("-", "_")


CONFIG_FLAGS: dict[str, ConfigFlag] = {
    f.dest: f
    for f in (
        ConfigFlag("--bundle", "bundle.path", "bundle folder (overrides bundle.path)", type=Path),
        ConfigFlag(
            "--trusted-keys",
            "bundle.trusted_keys",
            "only run bundles signed by a key in DIR (overrides bundle.trusted_keys)",
            type=Path,
            metavar="DIR",
        ),
        ConfigFlag(
            "--source",
            "source.uri",
            lambda: "frame source URI: " + _table_help("edge_runtime.sources"),
        ),
        ConfigFlag("--publish", "publish.uri", lambda: "publisher URI: " + _table_help("edge_runtime.publish")),
        ConfigFlag("--backend", "backend.name", _backend_help),
        ConfigFlag(
            "--precision", "backend.precision", "model precision (default fp32)", choices=("fp32", "fp16", "int8")
        ),
        ConfigFlag(
            "--intra-op-threads",
            "backend.intra_op_threads",
            "ONNX Runtime intra-op threads (default: ORT's, one per core)",
            type=int,
        ),
        ConfigFlag("--threshold", "threshold", "override the bundle's OK/NG threshold", type=float),
    )
}


def add_config_flags(parser: argparse.ArgumentParser, *names: str, help: Mapping[str, str] | None = None) -> None:
    """Add the table's flags `names` (by dest, in that order) to `parser`.

    Args:
        parser: the subcommand's parser.
        *names: keys of CONFIG_FLAGS, e.g. "bundle", "trusted_keys".
        help: per-command help text for some flags (where the command's default differs).

    Raises:
        KeyError: a name that is not in CONFIG_FLAGS (a programming error, not user input).
    """
    for name in names:
        flag = CONFIG_FLAGS[name]
        text = (help or {}).get(name, flag.help)
        kwargs: dict[str, Any] = {"help": text() if callable(text) else text}
        for attr in ("type", "choices", "metavar"):
            if getattr(flag, attr) is not None:
                kwargs[attr] = getattr(flag, attr)
        parser.add_argument(flag.option, **kwargs)


def add_config_file(
    parser: argparse.ArgumentParser,
    config_help: str = "runtime config YAML",
    set_help: str = "override a config key, e.g. pipeline.drop_policy=block",
) -> None:
    """Add `--config FILE` and the repeatable `--set KEY=VALUE` to `parser`."""
    parser.add_argument("--config", type=Path, help=config_help)
    add_set_flag(parser, set_help)


def add_set_flag(parser: argparse.ArgumentParser, help: str) -> None:
    """Add the repeatable `--set KEY=VALUE` (into `args.overrides`), spelled the same by every
    command that takes config overrides (run, bench, train, calibrate)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """{dotted config key: value} for every table flag the command registered (None = not given)."""
    return {f.key: getattr(args, f.dest) for f in CONFIG_FLAGS.values() if hasattr(args, f.dest)}


def config_from_args(args: argparse.Namespace, defaults: Sequence[str] = ()) -> RuntimeConfig:
    """The RuntimeConfig for a command's parsed `args`.

    Args:
        args: parsed arguments of a parser built with add_config_file and add_config_flags.
        defaults: the command's own `key=value` defaults, applied like `--set` entries given
            before the user's (so they override the file; the user's `--set` and flags win).

    Returns:
        The frozen, validated RuntimeConfig.

    Raises:
        ConfigError: a missing or unparsable file, an unknown key or a bad value.
    """
    from edge_runtime.runtime_config import load_runtime_config

    return load_runtime_config(getattr(args, "config", None), [*defaults, *args.overrides], flag_values(args))
