"""systemd's readiness and watchdog protocol (sd_notify(3)) for `clipinspect run`.

With `Type=notify` systemd considers the service started only when it receives `READY=1` on
the datagram socket named by `$NOTIFY_SOCKET` ('@name' is Linux's abstract namespace). With
`WatchdogSec=` it then expects `WATCHDOG=1` at least every `$WATCHDOG_USEC` microseconds and
kills and restarts the service when the pings stop. The protocol is one datagram of
newline-separated KEY=VALUE lines, so it is implemented here in a few lines of stdlib.

`PipelineWatchdog` decides when to send them: READY once the first frame is judged (or at
once when the source waits for a trigger: an armed camera may see no part for hours), then a
ping every third of the watchdog interval only while every stage that has work keeps making
progress. A capture or inference call that hangs stops the pings; systemd restarts the run.
Outside systemd (`NOTIFY_SOCKET` unset) all of this does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from edge_runtime.errors import ConfigError

log = logging.getLogger(__name__)


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one sd_notify datagram (e.g. "READY=1\\nSTATUS=..."); False when not under systemd
    or when the socket cannot be reached (logged: the line keeps running either way)."""
    addr = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    elif addr[0] != "/":
        log.warning("NOTIFY_SOCKET=%r is not a unix socket path; systemd notifications are off", addr)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode("utf-8"))
        return True
    except OSError as exc:
        log.warning("systemd notification %r failed: %s", state.split("\n", 1)[0], exc)
        return False


def watchdog_timeout_s(env: Mapping[str, str] | None = None) -> float | None:
    """WatchdogSec= in seconds when systemd asked this process for pings, else None."""
    env = os.environ if env is None else env
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (e.g. a wrapper that exec'd us)
    return int(usec) / 1e6


class PipelineWatchdog:
    """Watches a Pipeline's `progress()` counters from its own thread and speaks sd_notify.

    A stage counts as stuck when it has work waiting and its counter has not moved for
    `stall_s`: inference (captured - dropped > inferred), publishing (inferred > published),
    and capture itself when the camera free-runs (`armed=False`: frames are due all the time).
    """

    def __init__(
        self,
        pipeline: Any,
        *,
        armed: bool,
        timeout_s: float | None,
        stall_s: float | None = None,
        send: Callable[[str], bool] = notify,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.armed = armed
        self.timeout_s = timeout_s
        self.stall_s = stall_s if stall_s is not None else (timeout_s or 30.0)
        self.send = send
        self.clock = clock
        self.ready = False
        self.stuck: str | None = None
        self._last: dict[str, int] = {}
        self._moved: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> str | None:
        """None when healthy, else which stage is stuck and for how long."""
        now = self.clock()
        p = self.pipeline.progress()
        for key in ("captured", "inferred", "published"):
            if self._last.get(key) != p[key]:
                self._last[key], self._moved[key] = p[key], now
        pending = {
            "inferred": p["captured"] - p["dropped"] - p["inferred"] > 0,
            "published": p["inferred"] - p["published"] > 0,
            "captured": not self.armed and not p["stopping"],
        }
        for key, stage in (("captured", "capture"), ("inferred", "inference"), ("published", "publish")):
            idle = now - self._moved[key]
            if pending[key] and idle > self.stall_s:
                return f"{stage} made no progress for {idle:.0f} s"
        return None

    def tick(self) -> None:
        """One round: READY when due, then a ping if healthy (called every interval)."""
        p = self.pipeline.progress()
        if p["stopping"]:
            return
        if not self.ready and (p["inferred"] > 0 or self.armed):
            what = "first frame judged" if p["inferred"] > 0 else "source armed, waiting for a trigger"
            self.send(f"READY=1\nSTATUS={what}")
            self.ready = True
        reason = self.check()
        if reason is not None:
            if self.stuck != reason.split(" made", 1)[0]:
                log.error("watchdog: %s; no more pings, systemd will restart the service", reason)
            self.stuck = reason.split(" made", 1)[0]
            self.send(f"STATUS=stuck: {reason}")
            return
        self.stuck = None
        if self.ready and self.timeout_s:
            self.send(f"WATCHDOG=1\nSTATUS=judged {p['inferred']} frames, published {p['published']}")

    def _loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.tick()
            except Exception as exc:  # a watchdog bug must not take the line down; pings stop
                log.error("watchdog: %s", exc)

    def start(self) -> None:
        """Start the daemon thread that calls `tick` every min(timeout/3, 1 s) (every 1 s without a watchdog timeout)."""
        # Pings every third of the timeout: two can be lost before systemd acts.
        interval = min(self.timeout_s / 3, 1.0) if self.timeout_s else 1.0
        self._thread = threading.Thread(target=self._loop, args=(interval,), name="clipinspect-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (waiting up to 5 s) and tell systemd STOPPING=1."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.send("STOPPING=1")


@contextlib.contextmanager
def systemd_watchdog(
    pipeline: Any, *, armed: bool, env: Mapping[str, str] | None = None
) -> Iterator[PipelineWatchdog | None]:
    """Run a PipelineWatchdog around `pipeline.run()` when started by systemd with
    NOTIFY_SOCKET; otherwise do nothing."""
    env = os.environ if env is None else env
    if not env.get("NOTIFY_SOCKET"):
        yield None
        return
    timeout = watchdog_timeout_s(env)
    stall = env.get("CLIPINSPECT_STALL_S", "")
    try:
        stall_s = float(stall) if stall else None
    except ValueError:
        raise ConfigError(f"CLIPINSPECT_STALL_S must be a number of seconds, got {stall!r}") from None
    dog = PipelineWatchdog(pipeline, armed=armed, timeout_s=timeout, stall_s=stall_s, send=lambda s: notify(s, env))
    dog.start()
    try:
        yield dog
    finally:
        dog.stop()
