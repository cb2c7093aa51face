"""Fixtures shared by the publisher tests: a throwaway PKI and a mosquitto with TLS and a
password file (`secure_broker`), used by the TLS, plant-broker and doctor tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.publish.broker import BrokerTLS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_pki(d: Path, name: str = "ca") -> BrokerTLS:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (EC keys: fast)."""
    if shutil.which("openssl") is None:
        pytest.skip("neither the cryptography package nor the openssl CLI is available to make test certificates")
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN=clipinspect test {name}",
        cwd=d,
    )
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        f"{name}.pem",
        "-CAkey",
        f"{name}.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )
    (d / "server.key").chmod(0o644)  # mosquitto may drop privileges before reading it
    return BrokerTLS(ca_file=d / f"{name}.pem", cert_file=d / "server.pem", key_file=d / "server.key")


def password_file(d: Path, users: dict[str, str]) -> Path:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    f = d / "passwd"
    for i, (user, pw) in enumerate(users.items()):
        subprocess.run(
            [tool, *(["-c"] if i == 0 else []), "-b", str(f), user, pw], check=True, capture_output=True, timeout=30
        )
    f.chmod(0o644)
    return f


@pytest.fixture
def secure_broker(mqtt_broker_factory: Any, tmp_path: Path) -> Any:
    """mosquitto on 127.0.0.1 with TLS (its CA in `.test_tls`) and users device/plant."""
    tls = make_pki(tmp_path / "pki")
    pw = password_file(tmp_path, {"device": "dev-secret", "plant": "sub-secret"})
    broker = mqtt_broker_factory("mosquitto", password_file=pw, tls=tls)
    broker.test_tls = tls
    return broker
