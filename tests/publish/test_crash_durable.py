"""Must-show: durable before counted. `clipinspect run` publishes to a real mosquitto through a
link that lets the CONNECT through and then swallows everything (connected, never
acknowledging), is SIGKILLed once every verdict is made, and is started again on the same
spool with a working broker: every verdict made before the kill arrives, in order."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_runtime.publish.spool import DB_NAME
from tests.publish.proxy import TcpProxy

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
N = 120


def _images(folder: Path, n: int, seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:04d}.png"), rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    return folder


def _run_cmd(bundle: Path, folder: Path, uri: str, spool: Path, flush_s: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edge_runtime.cli",
        "run",
        "--bundle",
        str(bundle),
        "--source",
        f"folder://{folder}",
        "--publish",
        uri,
        "--set",
        "pipeline.drop_policy=block",
        "--set",
        f"pipeline.flush_timeout_s={flush_s}",
        "--set",
        f"publish.options.spool_dir={spool}",
        "--set",
        "publish.options.spool_fsync=always",
        "--set",
        "publish.options.reconnect_min_s=0.1",
        "--set",
        "publish.options.reconnect_max_s=0.5",
    ]


def _key(v: dict[str, Any]) -> tuple[str, int, int]:
    return (v["camera_serial"], v["frame_id"], v["capture_ts_ns"])  # the documented de-dup key


def _spooled(spool: Path) -> list[dict[str, Any]]:
    if not (spool / DB_NAME).exists():
        return []
    try:
        with sqlite3.connect(spool / DB_NAME, timeout=5) as db:
            return [json.loads(p) for (p,) in db.execute("SELECT payload FROM outbox ORDER BY seq")]
    except sqlite3.OperationalError:  # table not created yet
        return []


def test_sigkill_with_a_silent_broker_loses_nothing(
    toy_bundle, mqtt_broker_factory, mqtt_subscriber, tmp_path: Path
) -> None:
    broker = mqtt_broker_factory("mosquitto")
    sub = mqtt_subscriber(broker, "crash/verdict")
    sub.wait_subscribed()
    spool = tmp_path / "spool"
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proxy = TcpProxy(broker.host, broker.port, hold_after_connect=True)
    first = _images(tmp_path / "line-a", N, seed=1)
    proc = subprocess.Popen(
        _run_cmd(toy_bundle.root, first, f"mqtt://127.0.0.1:{proxy.port}/crash", spool, 300),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while len(_spooled(spool)) < N and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        made = _spooled(spool)
        assert len(made) == N, f"only {len(made)} of {N} verdicts stored before the deadline"
        assert proxy.holding.is_set() and proxy.swallowed > 0  # connected, sent, never acknowledged
        assert sub.payloads("/verdict") == []  # nothing reached the broker
        proc.send_signal(signal.SIGKILL)  # no flush, no close: only the disk counts
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proxy.close()
    assert [v["frame_id"] for v in made] == list(range(N))

    second = _images(tmp_path / "line-b", 3, seed=2)
    done = subprocess.run(
        _run_cmd(toy_bundle.root, second, f"{broker.uri}/crash", spool, 30),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{N} verdict(s) from an earlier run will be sent first" in done.stderr
    assert sub.wait_for(lambda m: len({_key(json.loads(x.payload)) for x in m}) >= N + 3, 20)
    arrived = sub.payloads("/verdict")
    keys: list[tuple[str, int, int]] = []
    for v in arrived:
        if _key(v) not in keys:
            keys.append(_key(v))
    before_kill = [_key(v) for v in made]
    assert keys[:N] == before_kill  # every verdict made before the kill, in order, first
    assert [k[0] for k in keys[N:]] == ["folder:line-b"] * 3 and [k[1] for k in keys[N:]] == [0, 1, 2]
    assert _spooled(spool) == []  # acknowledged verdicts left the spool
    print(
        f"\ncrash test: {N} verdicts made before SIGKILL, 0 reached the broker before it; "
        f"after restart {len(arrived)} arrived ({len(arrived) - len(keys)} repeats), {N} of {N} in order, then 3 new"
    )
