"""rollout.sh against a local stand-in device (--host local, a folder as the station root)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.helpers import REPO, ROLLOUT, local_rollout_cmd, make_bundle

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync not installed")


def rollout(station: Path, bundle: Path, health: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = local_rollout_cmd(
        station, bundle, "--restart-cmd", "true", "--health-cmd", health, "--health-timeout", "0", *extra
    )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def current_model(station: Path) -> str:
    return (station / "current" / "model.onnx").read_text()


def test_switch_then_rollback_on_failed_health_check(tmp_path):
    station = tmp_path / "station"
    ok = "test -f {current}/manifest.json"
    r1 = rollout(station, make_bundle(tmp_path / "b1", "v1"), ok)
    assert r1.returncode == 0, r1.stderr
    assert current_model(station) == "model v1" and (station / "current").is_symlink()
    first = os.readlink(station / "current")

    # v2 is healthy only if its model says v3: the check fails, rollout must go back to v1.
    r2 = rollout(station, make_bundle(tmp_path / "b2", "v2"), "grep -q v3 {current}/model.onnx")
    assert r2.returncode == 1
    assert "rolling back" in r2.stderr
    assert os.readlink(station / "current") == first and current_model(station) == "model v1"

    r3 = rollout(station, make_bundle(tmp_path / "b3", "v3"), "grep -q v3 {current}/model.onnx")
    assert r3.returncode == 0, r3.stderr
    assert current_model(station) == "model v3"
    assert not list((station / "bundles").glob(".incoming-*"))


def test_tampered_bundle_is_refused_and_nothing_switches(tmp_path):
    station = tmp_path / "station"
    assert rollout(station, make_bundle(tmp_path / "b1", "v1"), "true").returncode == 0
    before = os.readlink(station / "current")
    bad = make_bundle(tmp_path / "b2", "v2")
    (bad / "model.onnx").write_bytes(b"model v2 but edited")
    r = rollout(station, bad, "true")
    assert r.returncode == 2
    assert "failed verification on the station" in r.stderr and "does not match its sha256" in r.stderr
    assert os.readlink(station / "current") == before
    assert not list((station / "bundles").glob(".incoming-*"))


def test_old_versions_pruned_but_current_and_previous_kept(tmp_path):
    station = tmp_path / "station"
    for i in range(5):
        assert rollout(station, make_bundle(tmp_path / f"b{i}", f"v{i}"), "true", "--keep", "2").returncode == 0
    versions = sorted(p.name for p in (station / "bundles").iterdir())
    assert len(versions) == 2
    assert current_model(station) == "model v4"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bundle", "/nonexistent"], "is not a bundle"),
        (["--precision", "fp64"], "--precision must be"),
        (["--keep", "1"], "at least 2"),
        (["--bogus"], "unknown option --bogus"),
    ],
)
def test_bad_arguments_one_line_exit_2(tmp_path, args, message):
    b = make_bundle(tmp_path / "b", "v")
    base = {"--host": "local", "--bundle": str(b), "--root": str(tmp_path / "s")}
    argv = [x for k, v in base.items() if k not in args for x in (k, v)] + args
    r = subprocess.run(["bash", str(ROLLOUT), *argv], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client")
def test_unknown_host_is_one_line(tmp_path):
    b = make_bundle(tmp_path / "b", "v")
    r = subprocess.run(
        ["bash", str(ROLLOUT), "--host", "ops@station-does-not-exist.invalid", "--bundle", str(b)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert (
        r.stderr.strip().splitlines() == [r.stderr.strip()]
        and "cannot create an incoming folder on ops@station-does-not-exist.invalid" in r.stderr
    )
