"""deploy/ansible: syntax, lint, and a real rollout over two local stand-in stations.

The stations are folders (`root`) reached with ansible_connection=local; only the service
restart and its health probe are stand-ins (there is no systemd here). Every target-side step
is the real deploy/jetson/station.sh: copy, hash check, commit, switch, rollback, prune.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import make_bundle

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "deploy" / "ansible"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(
    not (BIN / "ansible-playbook").exists(), reason="ansible-core not installed (dev extra)"
)


def ansible_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
    }


def test_syntax_check(tmp_path):
    for playbook in ("provision.yml", "rollout.yml"):
        r = subprocess.run(
            [
                str(BIN / "ansible-playbook"),
                "--syntax-check",
                "-i",
                str(ANSIBLE / "inventory.example.yml"),
                str(ANSIBLE / playbook),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=ansible_env(tmp_path),
        )
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_ansible_lint_clean(tmp_path):
    if not (BIN / "ansible-lint").exists():
        pytest.skip("ansible-lint not installed")
    r = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "-c", str(ANSIBLE / ".ansible-lint"), str(ANSIBLE)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=ansible_env(tmp_path),
    )
    assert r.returncode == 0, r.stdout + r.stderr


def inventory(tmp_path: Path, canary: str) -> Path:
    """Two stations; st-b is healthy on any bundle except v2 and v3."""
    station = {
        "station_sh": str(REPO / "deploy/jetson/station.sh"),
        "station_python": sys.executable,
        "restart_cmd": "true",
        "precision": "none",
    }
    hosts = {
        "st-a": {
            "root": str(tmp_path / "st-a"),
            "health_cmd": f"test -f {tmp_path / 'st-a'}/current/manifest.json",
            **station,
        },
        "st-b": {
            "root": str(tmp_path / "st-b"),
            "health_cmd": f"! grep -qE 'v2|v3' {tmp_path / 'st-b'}/current/model.onnx",
            **station,
        },
    }
    inv = {
        "all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
            "children": {"stations": {"hosts": hosts}, "canary": {"hosts": {canary: None}}},
        }
    }
    path = tmp_path / f"inventory-{canary}.yml"
    path.write_text(yaml.safe_dump(inv))
    return path


def rollout(tmp_path: Path, inv: Path, bundle: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inv), str(ANSIBLE / "rollout.yml"), "-e", f"bundle={bundle}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=ansible_env(tmp_path),
    )


def model(tmp_path: Path, station: str) -> str:
    return (tmp_path / station / "current" / "model.onnx").read_text()


@pytest.mark.slow
def test_two_station_rollout_canary_batches_rollback(tmp_path):
    inv = inventory(tmp_path, canary="st-a")
    r1 = rollout(tmp_path, inv, make_bundle(tmp_path / "b1", "v1"))
    assert r1.returncode == 0, r1.stdout + r1.stderr
    assert model(tmp_path, "st-a") == model(tmp_path, "st-b") == "model v1"
    v1_b = os.readlink(tmp_path / "st-b" / "current")

    # v2: the canary st-a is healthy and keeps it; st-b's health fails: it goes back to v1.
    r2 = rollout(tmp_path, inv, make_bundle(tmp_path / "b2", "v2"))
    assert r2.returncode != 0
    assert model(tmp_path, "st-a") == "model v2"
    assert model(tmp_path, "st-b") == "model v1" and os.readlink(tmp_path / "st-b" / "current") == v1_b
    assert "st-b: health check failed on" in r2.stdout and f"rolled back to {Path(v1_b).name}" in r2.stdout
    recap = r2.stdout.split("PLAY RECAP", 1)[1]
    assert "st-a" in recap and "failed=0" in recap.split("st-a", 1)[1].splitlines()[0]
    assert "failed=1" in recap.split("st-b", 1)[1].splitlines()[0]

    # v3 with st-b as the canary: it fails and rolls back, and the playbook ends before st-a.
    r3 = rollout(tmp_path, inventory(tmp_path, canary="st-b"), make_bundle(tmp_path / "b3", "v3"))
    assert r3.returncode != 0
    assert model(tmp_path, "st-b") == "model v1" and model(tmp_path, "st-a") == "model v2"
    assert "Roll the bundle out to the other stations" not in r3.stdout

    # A tampered bundle is refused on the (canary) station by the hash check; nothing switches.
    bad = make_bundle(tmp_path / "b4", "v4")
    (bad / "model.onnx").write_text("model v4, edited")
    r4 = rollout(tmp_path, inv, bad)
    assert r4.returncode != 0 and "does not match its sha256" in r4.stdout
    assert model(tmp_path, "st-a") == "model v2" and model(tmp_path, "st-b") == "model v1"


@pytest.mark.slow
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("git") is None, reason="staged provisioning needs root (chown) and git"
)
def test_provision_playbook_runs_setup_on_each_station(tmp_path):
    """provision.yml for real on two local stations, setup.sh in --stage mode (the host is
    not changed); becoming root is not needed: the test already runs as root."""
    hosts = {
        name: {"setup_args": ["--stage", str(tmp_path / name)], "src_dir": str(tmp_path / f"{name}-src")}
        for name in ("st-a", "st-b")
    }
    inv = {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "ansible_become": False,
                "broker": "broker.test",
                "ansible_user": "ops",
                "src_archive": str(tmp_path / "src.tar.gz"),
            },
            "children": {"stations": {"hosts": hosts}},
        }
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inv))
    r = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(path), str(ANSIBLE / "provision.yml")],
        capture_output=True,
        text=True,
        timeout=300,
        env=ansible_env(tmp_path),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for name in hosts:
        config = (tmp_path / name / "etc/clipinspect/config.yaml").read_text()
        assert f'uri: "mqtts://{name}@broker.test:8883/clipinspect/{name}"' in config
        assert (tmp_path / name / "opt/clipinspect/src/deploy/jetson/station.sh").is_file()
        assert "clipinspect-deploy:" in (tmp_path / name / "etc/group").read_text()
