"""Static and dry-run checks of the Jetson deployment files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JETSON = REPO / "deploy" / "jetson"
SCRIPTS = sorted(p for p in REPO.rglob("*.sh") if ".venv" not in p.parts) + [REPO / ".ci" / "run"]


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck_clean(script):
    r = subprocess.run(["shellcheck", "-x", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_verifies(tmp_path):
    # verify checks that ExecStart binaries exist: lay them out under a stand-in root.
    opt = tmp_path / "opt"
    (opt / "src" / "deploy" / "jetson").mkdir(parents=True)
    (opt / "venv" / "bin").mkdir(parents=True)
    shutil.copy(JETSON / "service-hooks.sh", opt / "src" / "deploy" / "jetson" / "service-hooks.sh")
    cli = opt / "venv" / "bin" / "clipinspect"
    cli.write_text("#!/bin/sh\n")
    cli.chmod(0o755)
    unit = tmp_path / "clipinspect.service"
    unit.write_text((JETSON / "clipinspect.service").read_text().replace("/opt/clipinspect", str(opt)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if "clipinspect.service" in line]
    assert r.returncode == 0 and problems == [], r.stdout + r.stderr


def test_unit_contract():
    text = (JETSON / "clipinspect.service").read_text()
    for line in (
        "Restart=on-failure",
        "Type=notify",
        "WatchdogSec=30",
        "User=clipinspect",
        "EnvironmentFile=-/etc/clipinspect/clipinspect.env",
        "--config /etc/clipinspect/config.yaml",
        "KillSignal=SIGTERM",
        "StandardOutput=journal",
    ):
        assert line in text


def test_backoff_doubles_and_caps():
    hooks = JETSON / "service-hooks.sh"
    got = [
        int(subprocess.run(["bash", str(hooks), "backoff", str(n)], capture_output=True, text=True, check=True).stdout)
        for n in (0, 1, 2, 3, 6, 7, 20)
    ]
    assert got == [0, 2, 4, 8, 64, 120, 120]


def test_poststop_counts_failures_and_resets(tmp_path):
    hooks = JETSON / "service-hooks.sh"
    env = {**os.environ, "CLIPINSPECT_STATE_DIR": str(tmp_path)}
    for result in ("exit-code", "signal"):
        subprocess.run(["bash", str(hooks), "poststop"], env={**env, "SERVICE_RESULT": result}, check=True)
    assert (tmp_path / "failures").read_text().strip() == "2"
    subprocess.run(["bash", str(hooks), "poststop"], env={**env, "SERVICE_RESULT": "success"}, check=True)
    assert (tmp_path / "failures").read_text().strip() == "0"


def test_setup_dry_run_changes_nothing(tmp_path):
    root = tmp_path / "opt"
    r = subprocess.run(
        ["bash", str(JETSON / "setup.sh"), "--dry-run", "--root", str(root)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "venv --system-site-packages" in out
    assert "onnxruntime-gpu" in out and "pycuda" in out
    assert "would write /etc/systemd/system/usbfs-memory.service" in out
    assert "would write /etc/systemd/system/clipinspect.service" in out or "clipinspect.service" in out
    assert "dry run: nothing was changed" in out
    assert not root.exists()


def test_setup_rejects_unknown_option():
    r = subprocess.run(["bash", str(JETSON / "setup.sh"), "--frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown option --frobnicate" in r.stderr


def test_rollout_identity_agrees_across_flash_setup_and_rollout():
    """One ops account: flash.md creates it (no admin rights), setup.sh puts it in
    clipinspect-deploy with the narrow sudoers rule, rollout.sh's usage logs in as it."""
    flash = (JETSON / "flash.md").read_text()
    setup = (JETSON / "setup.sh").read_text()
    usage = subprocess.run(["bash", str(JETSON / "rollout.sh"), "--help"], capture_output=True, text=True).stdout
    assert "sudo useradd --create-home --shell /bin/bash ops" in flash
    assert 'OPS_USER="ops"' in setup and 'DEPLOY_GROUP="clipinspect-deploy"' in setup
    assert "--host ops@station-7" in usage and "--host ops@station-7" in flash
    assert "station.sh --root /opt/clipinspect switch VERSION" in flash
