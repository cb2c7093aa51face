"""The one-way rule: importing the edge runtime (and its CLI front door) loads no desktop stack."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("torch", "peft", "transformers", "train", "export", "calibration", "deploy")


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _forbidden(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if m.split(".")[0] in FORBIDDEN)


def test_import_edge_runtime_loads_no_desktop_stack():
    assert _forbidden(_modules_after("import edge_runtime")) == []


def test_edge_runtime_modules_load_no_desktop_stack():
    # Every runtime module the device imports on `clipinspect run`.
    code = "\n".join(
        f"import importlib; importlib.import_module('{m}')"
        for m in (
            "edge_runtime.cli",
            "edge_runtime.bundle",
            "edge_runtime.preprocess",
            "edge_runtime.imageio",
            "edge_runtime.verdict",
            "edge_runtime.config",
        )
    )
    assert _forbidden(_modules_after(code)) == []


def test_cli_help_is_light():
    # --help imports every subcommand module; none may pull in torch at import time.
    code = "from edge_runtime import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass"
    assert [m for m in _forbidden(_modules_after(code)) if m.split(".")[0] in ("torch", "peft", "transformers")] == []
