"""A local MQTT broker for demos and tests: mosquitto if installed, else amqtt (optional,
dev extra), always in a subprocess bound to 127.0.0.1.

    with EmbeddedBroker() as broker:          # kind="auto", a free port
        open_publisher(broker.uri)

stop()/start() restart it on the same port (tests use this to cut the connection).
Run `python -m edge_runtime.publish.broker --port 1883` to keep one in the foreground.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_runtime.errors import MissingDependency, PublishError

log = logging.getLogger(__name__)

Kind = Literal["auto", "mosquitto", "amqtt"]


def mosquitto_path() -> str | None:
    """The mosquitto executable (PATH, else /usr/sbin/mosquitto), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def amqtt_available() -> bool:
    """True when the amqtt package is installed (found without importing it)."""
    import importlib.util

    return importlib.util.find_spec("amqtt") is not None


def available_kinds() -> list[str]:
    """The broker kinds this machine can start, preferred first (mosquitto, amqtt)."""
    kinds = []
    if mosquitto_path():
        kinds.append("mosquitto")
    if amqtt_available():
        kinds.append("amqtt")
    return kinds


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as brokers do: TIME_WAIT is fine
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class BrokerTLS:
    """Server side of TLS: the listener's certificate, key and the CA that signed it."""

    ca_file: Path
    cert_file: Path
    key_file: Path


class EmbeddedBroker:
    """A local MQTT broker in a subprocess, for demos and tests (see the module docstring).

    Args:
        kind: "mosquitto", "amqtt", or "auto" (the first of available_kinds()).
        host: the address it listens on (127.0.0.1).
        port: the port; 0 picks a free one.
        workdir: config, log and persistence folder; None: a temp dir removed by close().
        persistence: keep sessions and queued messages across restarts (mosquitto).
        password_file: a mosquitto_passwd file; anonymous clients are then refused.
        tls: serve TLS with this certificate (mosquitto).

    Raises:
        MissingDependency: no broker of that kind is installed.
        PublishError: amqtt asked for persistence, passwords or TLS.
    """

    def __init__(
        self,
        kind: Kind = "auto",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        workdir: str | Path | None = None,
        persistence: bool = False,
        password_file: str | Path | None = None,
        tls: BrokerTLS | None = None,
    ) -> None:
        if kind == "auto":
            kinds = available_kinds()
            if not kinds:
                raise MissingDependency(
                    "no MQTT broker: install mosquitto (apt-get install mosquitto) or pip install amqtt"
                )
            kind = kinds[0]  # type: ignore[assignment]
        if kind == "mosquitto" and not mosquitto_path():
            raise MissingDependency("mosquitto is not installed (apt-get install mosquitto)")
        if kind == "amqtt" and not amqtt_available():
            raise MissingDependency("amqtt is not installed; pip install 'clipinspect[dev]'")
        if kind == "amqtt" and (persistence or password_file or tls):
            raise PublishError("the embedded amqtt broker supports plain anonymous listeners only; use mosquitto")
        self.kind: str = kind
        self.host = host
        self.port = port or free_port(host)
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="clipinspect-broker-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence = persistence
        self.password_file = Path(password_file) if password_file else None
        self.tls = tls
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_file = self.workdir / f"{self.kind}.log"

    @property
    def uri(self) -> str:
        """`mqtt(s)://host:port` of the listener."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        if self.kind == "mosquitto":
            conf = self.workdir / "mosquitto.conf"
            lines = [
                f"listener {self.port} {self.host}",
                f"allow_anonymous {'false' if self.password_file else 'true'}",
                f"persistence {'true' if self.persistence else 'false'}",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_type information",
                "max_queued_messages 100000",
            ]
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                # As root mosquitto would switch to user "mosquitto", which cannot read files
                # in a private work dir (pytest's tmp dirs are 0700). A local test/demo broker only.
                lines.append("user root")
            if self.persistence:
                lines += [f"persistence_location {self.workdir}/", "autosave_interval 0"]
            if self.password_file:
                lines.append(f"password_file {self.password_file}")
            if self.tls:
                lines += [
                    f"cafile {self.tls.ca_file}",
                    f"certfile {self.tls.cert_file}",
                    f"keyfile {self.tls.key_file}",
                ]
            conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
            return [str(mosquitto_path()), "-c", str(conf)]
        conf = self.workdir / "amqtt.yaml"
        conf.write_text(
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: {self.host}:{self.port}\n"
            "plugins:\n"
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n",
            encoding="utf-8",
        )
        return [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it accepts TCP connections.

        Args:
            timeout_s: how long to wait for the listener.

        Returns:
            self.

        Raises:
            PublishError: the port is taken, or the broker exited or did not listen in time.
        """
        if self.running:
            return self
        if not _port_free(self.host, self.port):
            # Otherwise the readiness probe below would happily talk to whoever holds it.
            raise PublishError(f"{self.kind} broker cannot listen on {self.host}:{self.port}: the port is in use")
        cmd = self._command()
        with self.log_file.open("ab") as logfh:
            self._proc = subprocess.Popen(cmd, stdout=logfh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PublishError(f"{self.kind} broker exited with code {self._proc.returncode}: {self._log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    log.info("%s broker listening on %s:%d", self.kind, self.host, self.port)
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise PublishError(
            f"{self.kind} broker did not listen on {self.host}:{self.port} within {timeout_s:.0f} s: {self._log_tail()}"
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful stop (SIGTERM: mosquitto saves its persistence file), SIGKILL if stuck."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if self.persistence and "Error saving" in self._log_tail():
            # Sessions and queued messages are gone: say so rather than let a test race.
            raise PublishError(f"{self.kind} broker could not save its persistence file: {self._log_tail()}")

    def kill(self) -> None:
        """Hard stop (SIGKILL), like a crash or power loss of the broker host."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)

    def restart(self) -> None:
        """stop() then start() on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop it and remove its temp work dir (if it made one)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-3:]) or "(empty log)"

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m edge_runtime.publish.broker`: keep a broker in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m edge_runtime.publish.broker", description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["auto", "mosquitto", "amqtt"], default="auto")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    with EmbeddedBroker(args.kind, port=args.port) as broker:
        print(f"{broker.kind} broker at {broker.uri} (Ctrl-C to stop)", flush=True)
        try:
            while broker.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
