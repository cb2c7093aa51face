"""setup.sh --stage: a real provisioning run into a staged root (not a dry run), every owner,
group and mode checked against what clipinspect.service and a rollout need, then the station
used as its users would: the ops account deploys a bundle, root switches it (the sudoers
rule), and `clipinspect run --config <staged config>` starts as the unprivileged service uid."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edge_runtime.runtime_config import load_runtime_config

REPO = Path(__file__).resolve().parents[2]
JETSON = REPO / "deploy" / "jetson"
SITE = next(p for p in sys.path if p.endswith("site-packages"))

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="staging owners needs root (chown)"),
    pytest.mark.skipif(
        shutil.which("setpriv") is None or shutil.which("rsync") is None, reason="needs setpriv and rsync"
    ),
]


def setup(stage: Path, *extra: str) -> subprocess.CompletedProcess:
    r = subprocess.run(
        ["bash", str(JETSON / "setup.sh"), "--stage", str(stage), "--station", "line1-st7", *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return r


def read_db(path: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in path.read_text().splitlines() if line}


@pytest.fixture(scope="module")
def stage():
    # Not under pytest's tmp_path: that is 0700 root, and the station's users must traverse it.
    d = Path(tempfile.mkdtemp(prefix="clipinspect-stage-"))
    d.chmod(0o755)
    r1 = setup(d)
    passwd_before = (d / "etc" / "passwd").read_text()
    r2 = setup(d)  # idempotent: nothing duplicated, owners and modes enforced again
    assert (d / "etc" / "passwd").read_text() == passwd_before
    assert "staged, not run: systemctl enable clipinspect.service" in r1.stdout + r2.stdout
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def ids(stage):
    users, groups = read_db(stage / "etc" / "passwd"), read_db(stage / "etc" / "group")
    return {
        "root": 0,
        "svc": int(users["clipinspect"][2]),
        "svc_group": int(groups["clipinspect"][2]),
        "ops": int(users["ops"][2]),
        "deploy": int(groups["clipinspect-deploy"][2]),
        "supplementary": [
            int(groups[g][2]) for g in ("video", "plugdev", "flirimaging") if "clipinspect" in groups[g][3].split(",")
        ],
        "deploy_members": groups["clipinspect-deploy"][3].split(","),
    }


def test_owners_and_modes_match_the_unit_and_rollout(stage, ids):
    unit = (stage / "etc/systemd/system/clipinspect.service").read_text()
    assert "User=clipinspect" in unit and "Group=clipinspect" in unit
    assert ids["deploy_members"] == ["ops"] and len(ids["supplementary"]) == 3
    svc, svc_g, deploy = ids["svc"], ids["svc_group"], ids["deploy"]
    expected = {  # path: (uid, gid, mode)
        "opt/clipinspect": (0, 0, 0o755),
        "opt/clipinspect/src": (0, 0, 0o755),
        "opt/clipinspect/bundles": (0, deploy, 0o2775),  # ops writes, setgid keeps the group
        "var/lib/clipinspect": (svc, svc_g, 0o750),  # spool, heatmaps
        "etc/clipinspect": (0, svc_g, 0o755),
        "etc/clipinspect/config.yaml": (0, svc_g, 0o640),  # readable by the service's group only
        "etc/clipinspect/clipinspect.env": (0, 0, 0o600),  # secrets: systemd reads them as root
        "etc/clipinspect/tls": (0, svc_g, 0o750),
        "etc/clipinspect/trusted_keys": (0, 0, 0o755),  # only root adds a trusted key
        "etc/sudoers.d/clipinspect-deploy": (0, 0, 0o440),
        "etc/systemd/system/clipinspect.service": (0, 0, 0o644),
        "etc/shadow": (0, 0, 0o600),
    }
    got = {}
    for rel in expected:
        st = (stage / rel).lstat()
        got[rel] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    assert got == expected
    src_files = [p for p in (stage / "opt/clipinspect/src").rglob("*") if not p.is_symlink()]
    assert src_files and all(p.stat().st_uid == 0 and not p.stat().st_mode & 0o022 for p in src_files)


def test_sudoers_allows_only_switch_and_restart(stage):
    text = (stage / "etc/sudoers.d/clipinspect-deploy").read_text()
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert rules == [
        "Cmnd_Alias CLIPINSPECT_SWITCH = /opt/clipinspect/src/deploy/jetson/station.sh --root /opt/clipinspect switch *",
        "Cmnd_Alias CLIPINSPECT_RESTART = /usr/bin/systemctl --no-block restart clipinspect, /bin/systemctl --no-block restart clipinspect",
        "%clipinspect-deploy ALL=(root) NOPASSWD: CLIPINSPECT_SWITCH, CLIPINSPECT_RESTART",
    ]
    if shutil.which("visudo"):
        r = subprocess.run(
            ["visudo", "-cf", str(stage / "etc/sudoers.d/clipinspect-deploy")], capture_output=True, text=True
        )
        assert r.returncode == 0, r.stdout + r.stderr


def test_config_is_mqtts_with_credentials_unless_asked(stage, tmp_path):
    cfg = load_runtime_config(stage / "etc/clipinspect/config.yaml")
    assert cfg.publish.uri == "mqtts://line1-st7@broker.plant.local:8883/clipinspect/line1-st7"
    assert str(cfg.publish.options.tls.ca_file) == "/etc/clipinspect/tls/ca.crt"
    assert cfg.publish.options.password_env == "CLIPINSPECT_MQTT_PASSWORD"
    assert "CLIPINSPECT_MQTT_PASSWORD=" in (stage / "etc/clipinspect/clipinspect.env").read_text()
    plain = tmp_path / "plain"
    setup(plain, "--mqtt-plain", "--broker", "10.0.0.5")
    cfg = load_runtime_config(plain / "etc/clipinspect/config.yaml")
    assert cfg.publish.uri == "mqtt://line1-st7@10.0.0.5:1883/clipinspect/line1-st7"
    assert cfg.publish.options.tls.ca_file is None


@pytest.fixture(scope="module")
def station_python() -> list[str]:
    """A python the station's unprivileged users may execute with this venv's packages: the
    venv's own, or (when it links into a 0700 home, e.g. pyenv under /root) the system python
    of the same version with the venv's site-packages on PYTHONPATH."""
    probe = 'exec "$0" -c "import onnxruntime, yaml"'
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for py in (sys.executable, shutil.which(version, path="/usr/bin:/usr/local/bin")):
        if (
            py
            and as_user(
                65534, 65534, [], "bash", "-c", probe, py, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}:{SITE}"}
            ).returncode
            == 0
        ):
            return [py]
    pytest.skip(f"no {version} that an unprivileged user may execute")


def as_user(uid: int, gid: int, groups: list[int], *cmd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    priv = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
    priv += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    return subprocess.run([*priv, *cmd], capture_output=True, text=True, timeout=120, env=env)


def test_ops_deploys_root_switches_service_uid_runs(stage, ids, toy_bundle, station_python):
    root = stage / "opt/clipinspect"
    src = Path(tempfile.mkdtemp(prefix="clipinspect-bundle-", dir=stage))
    shutil.copytree(toy_bundle.root, src / "bundle")
    subprocess.run(["chmod", "-R", "a+rX", str(src)], check=True)
    station = [str(JETSON / "station.sh"), "--root", str(root), "--python", station_python[0]]
    ops = (ids["ops"], ids["ops"], [ids["deploy"]])
    env = {"PATH": "/usr/bin:/bin", "HOME": str(stage), "PYTHONPATH": f"{REPO}:{SITE}"}

    # The ops account (clipinspect-deploy) copies and verifies the bundle without any privilege...
    r = as_user(*ops, *station, "incoming", "v1", env=env)
    assert r.returncode == 0, r.stderr
    incoming = r.stdout.strip()
    assert as_user(*ops, "rsync", "-a", f"{src}/bundle/", f"{incoming}/", env=env).returncode == 0
    for step in (["verify", "v1"], ["commit", "v1"]):
        r = as_user(*ops, *station, *step, env=env)
        assert r.returncode == 0, r.stderr
    assert (root / "bundles/v1").stat().st_gid == ids["deploy"]
    # ...but cannot switch the live link (that is the sudoers rule) nor read the service's config.
    r = as_user(*ops, *station, "switch", "v1", env=env)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    assert as_user(*ops, "cat", str(stage / "etc/clipinspect/config.yaml"), env=env).returncode != 0
    # The service user cannot change bundles.
    svc = (ids["svc"], ids["svc_group"], ids["supplementary"])
    assert as_user(*svc, "touch", str(root / "bundles/v1/x"), env=env).returncode != 0
    # root (sudo station.sh --root ... switch v1).
    r = subprocess.run([*station, "switch", "v1"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert os.readlink(root / "current") == str(root / "bundles/v1")

    # The service as systemd would start it: its uid/gid and supplementary groups, the staged
    # config; only the camera, the broker and the TensorRT backend are replaced for this machine.
    var = stage / "var/lib/clipinspect"
    r = as_user(
        *svc,
        *station_python,
        "-m",
        "edge_runtime.cli",
        "run",
        "--config",
        str(stage / "etc/clipinspect/config.yaml"),
        "--set",
        f"bundle.path={root / 'current'}",
        "--source",
        "synthetic://?width=64&height=64",
        "--publish",
        f"jsonl://{var / 'verdicts.jsonl'}",
        "--backend",
        "ort-cpu",
        "--precision",
        "fp32",
        "--set",
        f"heatmaps.dir={var / 'heatmaps'}",
        "--set",
        "pipeline.drop_policy=block",
        "--max-frames",
        "5",
        env={**env, "HOME": str(var)},
    )
    assert r.returncode == 0, r.stderr
    assert "captured 5" in r.stdout
    written = var / "verdicts.jsonl"
    assert len(written.read_text().splitlines()) == 5 and written.stat().st_uid == ids["svc"]
