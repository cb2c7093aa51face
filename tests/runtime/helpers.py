"""Helpers shared by the runtime tests: `clipinspect run` argvs, in this process or as a real child."""

from __future__ import annotations

import sys
from pathlib import Path

# Every frame judged, none dropped: what a test that counts verdicts needs.
BLOCK = "pipeline.drop_policy=block"


def run_argv(bundle: Path, source: str, publish: str, *extra: str) -> list[str]:
    """`clipinspect run` argv (for `edge_runtime.cli.main`): frames from `source` through the bundle
    folder `bundle`, verdicts to `publish`, then `extra`."""
    return ["run", "--bundle", str(bundle), "--source", source, "--publish", publish, *extra]


def run_cmd(bundle: Path, source: str, publish: str, *extra: str) -> list[str]:
    """`run_argv` as a separate Python process (`python -m edge_runtime.cli run ...`), for tests that
    signal it, time it or read its environment."""
    return [sys.executable, "-m", "edge_runtime.cli", *run_argv(bundle, source, publish, *extra)]


def sets(*items: str) -> tuple[str, ...]:
    """`--set KEY=VALUE` for each of `items`, in order (config overrides for `run_argv`'s `extra`)."""
    return tuple(arg for item in items for arg in ("--set", item))
