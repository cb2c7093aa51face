"""`run` and `bench` read their config flags from one table (edge_runtime/runtime_flags.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edge_runtime.cli import _discover, build_parser
from edge_runtime.errors import ConfigError
from edge_runtime.runtime_flags import CONFIG_FLAGS, config_from_args

ROOT = Path(__file__).resolve().parents[2]


def _parse(argv):
    return build_parser(_discover()).parse_args(argv)


def test_flag_beats_set_beats_file_in_run_and_bench(tmp_path):
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text("backend: {name: trt, precision: int8}\nsource: {uri: 'cv://0'}\npublish: {uri: 'jsonl://f'}\n")
    common = ["--config", str(cfg_file), "--set", "backend.precision=fp16", "--set", "source.uri=synthetic://"]
    for command in ("run", "bench"):
        cfg = config_from_args(_parse([command, *common, "--backend", "ort-cpu"]))
        assert (cfg.backend.name, cfg.backend.precision, cfg.source.uri) == ("ort-cpu", "fp16", "synthetic://"), command
    # the bench's own defaults sit above the file (null:// publisher), below --set and flags
    args = _parse(["bench", *common])
    from edge_runtime.commands.bench import BENCH_DEFAULTS

    assert config_from_args(args, BENCH_DEFAULTS).publish.uri == "null://"
    assert (
        config_from_args(_parse(["bench", *common, "--publish", "stdout://"]), BENCH_DEFAULTS).publish.uri
        == "stdout://"
    )
    assert config_from_args(_parse(["run", *common])).publish.uri == "jsonl://f"


def test_every_table_flag_reaches_its_key():
    argv = [
        "run",
        "--bundle",
        "/b",
        "--trusted-keys",
        "/k",
        "--source",
        "synthetic://",
        "--publish",
        "stdout://",
        "--backend",
        "ort-cpu",
        "--precision",
        "int8",
        "--threshold",
        "0.25",
    ]
    cfg = config_from_args(_parse(argv))
    assert (str(cfg.bundle.path), str(cfg.bundle.trusted_keys), cfg.threshold) == ("/b", "/k", 0.25)
    cfg = config_from_args(_parse(["bench", "--intra-op-threads", "3", "--precision", "fp16"]))
    assert (cfg.backend.intra_op_threads, cfg.backend.precision) == (3, "fp16")
    assert {f.dest for f in CONFIG_FLAGS.values()} == set(CONFIG_FLAGS)


def test_bench_out_defaults_to_a_git_ignored_folder():
    out = _parse(["bench"]).out
    assert out == Path("bench-results")
    assert "/bench-results/" in (ROOT / ".gitignore").read_text().splitlines()
    if shutil.which("git") and (ROOT / ".git").exists():
        # git check-ignore exits 0 when the path is ignored by the repository's rules
        done = subprocess.run(["git", "check-ignore", "-q", str(out / "bench.json")], cwd=ROOT, check=False)
        assert done.returncode == 0


def test_flags_fill_an_empty_section_and_name_a_non_section(tmp_path):
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text("source:\nbackend: {name: trt}\n")  # `source:` alone is null: the section's defaults
    cfg = config_from_args(_parse(["run", "--config", str(cfg_file), "--source", "synthetic://"]))
    assert (cfg.source.uri, cfg.backend.name) == ("synthetic://", "trt")
    cfg_file.write_text("source: cv://0\n")
    with pytest.raises(ConfigError, match="config key 'source' is not a section"):
        config_from_args(_parse(["run", "--config", str(cfg_file), "--source", "synthetic://"]))
    with pytest.raises(ConfigError, match="override 'threshold.x=1': 'threshold' is not a section"):
        config_from_args(_parse(["run", "--set", "threshold=0.5", "--set", "threshold.x=1"]))
