"""MQTT publisher against a real broker on 127.0.0.1 (mosquitto and/or amqtt)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.errors import PublishError
from edge_runtime.publish import Publisher, open_publisher
from edge_runtime.publish.broker import EmbeddedBroker
from edge_runtime.verdict import validate_verdict
from tests.publish.helpers import first_occurrences, verdict

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

FAST = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "close_timeout_s": 5.0}


def _spool_rows(spool: Path) -> list[int]:
    """frame_ids still in a spool's outbox, in order (read by a second sqlite connection)."""
    import sqlite3

    with sqlite3.connect(spool / "spool.db") as db:
        return [json.loads(p)["frame_id"] for (p,) in db.execute("SELECT payload FROM outbox ORDER BY seq")]


def _frame_ids(sub: Any) -> list[int]:
    return [p["frame_id"] for p in sub.payloads("/verdict")]


def _has_all(n: int):
    return lambda msgs: len({json.loads(m.payload)["frame_id"] for m in msgs if m.topic.endswith("/verdict")}) >= n


def test_every_verdict_arrives_valid_in_order_qos1(mqtt_broker: EmbeddedBroker, mqtt_subscriber: Any) -> None:
    sub = mqtt_subscriber(mqtt_broker, "line1/#")
    sub.wait_subscribed()
    pub = open_publisher(f"{mqtt_broker.uri}/line1", FAST)
    assert isinstance(pub, Publisher)
    for i in range(100):
        pub.publish(verdict(i))
    assert pub.flush(10) is True
    assert sub.wait_for(_has_all(100))
    pub.close()
    msgs = [m for m in sub.snapshot() if m.topic == "line1/verdict"]
    assert [m.qos for m in msgs] == [1] * len(msgs)
    payloads = [json.loads(m.payload) for m in msgs]
    assert [p["frame_id"] for p in payloads] == list(range(100))  # no outage: no repeats either
    assert all(validate_verdict(p) == [] for p in payloads)
    st = pub.stats()
    assert (st["published"], st["acked"], st["dropped"], st["spooled"]) == (100, 100, 0, 0)


def test_memory_queue_overflow_spills_to_disk_in_order(
    mqtt_broker: EmbeddedBroker, mqtt_subscriber: Any, tmp_path: Path
) -> None:
    sub = mqtt_subscriber(mqtt_broker, "o/verdict")
    sub.wait_subscribed()
    pub = open_publisher(
        f"{mqtt_broker.uri}/o",
        {**FAST, "queue_max": 2, "max_inflight": 1, "spool_dir": str(tmp_path / "spool"), "spool_fsync": "batch"},
    )
    for i in range(150):  # far faster than one-at-a-time acknowledgements drain
        pub.publish(verdict(i))
    assert pub.flush(15) is True
    assert sub.wait_for(_has_all(150))
    pub.close()
    assert _frame_ids(sub) == list(range(150))
    st = pub.stats()
    assert st["spooled"] > 0 and st["dropped"] == 0 and st["acked"] == 150


def test_per_camera_topic(mqtt_broker: EmbeddedBroker, mqtt_subscriber: Any) -> None:
    sub = mqtt_subscriber(mqtt_broker, "plant/+/verdict")
    sub.wait_subscribed()
    pub = open_publisher(f"{mqtt_broker.uri}/plant", {**FAST, "per_camera_topic": True})
    pub.publish(verdict(1, camera_serial="A1"))
    pub.publish(verdict(2, camera_serial="B/2"))
    assert pub.flush(10)
    assert sub.wait_for(lambda m: len(m) >= 2)
    pub.close()
    assert sorted(m.topic for m in sub.snapshot()) == ["plant/A1/verdict", "plant/B_2/verdict"]


def test_broker_stopped_mid_run_loses_nothing_and_keeps_order(
    mqtt_broker_factory: Any, mqtt_subscriber: Any, tmp_path: Path
) -> None:
    # A plant subscriber keeps a persistent session (clean_session False) on a broker with
    # persistence, so what the broker accepted while the subscriber was away is kept for it.
    broker = mqtt_broker_factory("mosquitto", persistence=True)
    sub = mqtt_subscriber(broker, "line/verdict", client_id="plant-sub", clean_session=False)
    sub.wait_subscribed()
    pub = open_publisher(f"{broker.uri}/line", {**FAST, "spool_dir": str(tmp_path / "spool"), "queue_max": 50})
    total, stop_at, restart_at = 300, 80, 200
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(total):
                pub.publish(verdict(i))
                if i == stop_at:
                    broker.stop()  # mid-run, while verdicts keep coming
                if i == restart_at:
                    broker.start()
                time.sleep(0.002)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    t = threading.Thread(target=produce)
    started = time.monotonic()
    t.start()
    t.join(30)
    assert not errors and not t.is_alive()
    assert pub.flush(20) is True, pub.stats()
    arrived = sub.wait_for(_has_all(total), 20)
    pub.close()
    missing = sorted(set(range(total)) - set(_frame_ids(sub)))
    assert arrived, f"missing {missing} stats {pub.stats()} broker log: {broker.log_file.read_text()[-1500:]}"
    ids = _frame_ids(sub)
    assert first_occurrences(ids) == list(range(total))  # every one, in order, no gaps
    st = pub.stats()
    assert st["dropped"] == 0 and st["acked"] == total
    assert st["reconnects"] >= 1 and st["spooled"] == total  # every one stored before it counted
    assert time.monotonic() - started < 40


def test_connection_cut_with_verdicts_in_flight_resends_them_in_order(
    mqtt_broker: EmbeddedBroker, mqtt_subscriber: Any, tmp_path: Path
) -> None:
    from tests.publish.proxy import TcpProxy

    sub = mqtt_subscriber(mqtt_broker, "x/verdict")  # stays connected: sees everything the broker gets
    sub.wait_subscribed()
    proxy = TcpProxy(mqtt_broker.host, mqtt_broker.port)
    try:
        pub = open_publisher(
            f"mqtt://127.0.0.1:{proxy.port}/x", {**FAST, "max_inflight": 8, "spool_dir": str(tmp_path / "spool")}
        )
        for i in range(10):
            pub.publish(verdict(i))
        assert pub.flush(10)
        proxy.holding.set()
        for i in range(10, 15):
            pub.publish(verdict(i))
        deadline = time.monotonic() + 5
        while pub.stats()["inflight"] < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pub.stats()["inflight"] == 5  # sent, swallowed, unacknowledged
        proxy.cut()
        for i in range(15, 40):
            pub.publish(verdict(i))
        assert pub.flush(15) is True, pub.stats()
        assert sub.wait_for(_has_all(40))
        pub.close()
    finally:
        proxy.close()
    assert first_occurrences(_frame_ids(sub)) == list(range(40))
    st = pub.stats()
    assert st["reconnects"] >= 1 and st["acked"] == 40 and st["dropped"] == 0


def test_spool_replayed_by_next_publisher_after_close(
    mqtt_broker: EmbeddedBroker, mqtt_subscriber: Any, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    mqtt_broker.stop()
    a = open_publisher(f"{mqtt_broker.uri}/p", {**FAST, "spool_dir": str(spool), "close_timeout_s": 0.2})
    for i in range(30):
        a.publish(verdict(i))
    a.close()
    st_a = a.stats()
    assert (st_a["spooled"], st_a["acked"], st_a["dropped"]) == (30, 0, 0)
    assert _spool_rows(spool) == list(range(30))

    mqtt_broker.start()
    sub = mqtt_subscriber(mqtt_broker, "p/verdict")
    sub.wait_subscribed()
    b = open_publisher(f"{mqtt_broker.uri}/p", {**FAST, "spool_dir": str(spool)})
    for i in range(30, 40):
        b.publish(verdict(i))
    assert b.flush(10) is True
    assert sub.wait_for(_has_all(40))
    b.close()
    assert first_occurrences(_frame_ids(sub)) == list(range(40))
    assert b.stats()["recovered"] == 30 and b.stats()["replayed"] == 30
    assert _spool_rows(spool) == []  # acknowledged verdicts leave the spool


_CRASHING_PUBLISHER = """
import sys, time
from edge_runtime.errors import PublishError
from edge_runtime.publish import Publisher, open_publisher
from edge_runtime.verdict import make_verdict
pub = open_publisher(sys.argv[1], {"spool_dir": sys.argv[2], "reconnect_min_s": 0.1, "reconnect_max_s": 0.2})
for i in range(int(sys.argv[3])):
    pub.publish(make_verdict(frame_id=i, camera_serial="CAM1", capture_ts_ns=i, score=0.1, threshold=0.5,
        bundle_sha256="0" * 64, model_id="m", backend="ort-cpu", precision="fp32", latency_ms={}))
print("published", flush=True)
time.sleep(60)
"""


def _crashing_publisher(uri: str, spool: Path, n: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_PUBLISHER, uri, str(spool), str(n)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "published", line
    return proc


def test_spool_survives_a_crash_sigkill(mqtt_broker: EmbeddedBroker, mqtt_subscriber: Any, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    mqtt_broker.stop()
    proc = _crashing_publisher(f"{mqtt_broker.uri}/c", spool, 25)
    proc.send_signal(signal.SIGKILL)  # no close(), no flush: only what is on disk counts
    proc.wait(10)
    mqtt_broker.start()
    sub = mqtt_subscriber(mqtt_broker, "c/verdict")
    sub.wait_subscribed()
    b = open_publisher(f"{mqtt_broker.uri}/c", {**FAST, "spool_dir": str(spool)})
    assert b.flush(10) is True
    assert sub.wait_for(_has_all(25))
    b.close()
    assert first_occurrences(_frame_ids(sub)) == list(range(25))
    assert b.stats()["recovered"] == 25 and b.stats()["replayed"] == 25


def test_spool_full_policy_is_counted_and_keeps_a_prefix(
    mqtt_broker: EmbeddedBroker, mqtt_subscriber: Any, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    mqtt_broker.stop()
    opts = {
        **FAST,
        "spool_dir": str(spool),
        "spool_segment_bytes": 2000,
        "spool_max_bytes": 4000,
        "close_timeout_s": 0.1,
    }
    a = open_publisher(f"{mqtt_broker.uri}/f", opts)
    for i in range(40):
        a.publish(verdict(i))
    a.close()
    st = a.stats()
    assert st["dropped"] > 0 and st["spooled"] > 0
    assert st["spooled"] + st["dropped"] == 40
    kept = st["spooled"]

    mqtt_broker.start()
    sub = mqtt_subscriber(mqtt_broker, "f/verdict")
    sub.wait_subscribed()
    b = open_publisher(f"{mqtt_broker.uri}/f", opts)
    assert b.flush(10) is True
    assert sub.wait_for(_has_all(kept))
    b.close()
    assert first_occurrences(_frame_ids(sub)) == list(range(kept))  # the oldest kept, no holes


def test_no_spool_memory_queue_bound_is_counted(tmp_path: Path) -> None:
    from edge_runtime.publish.broker import free_port

    pub = open_publisher(f"mqtt://127.0.0.1:{free_port()}/m", {**FAST, "queue_max": 5, "close_timeout_s": 0.1})
    t0 = time.monotonic()
    for i in range(12):
        pub.publish(verdict(i))
    assert time.monotonic() - t0 < 1.0  # never blocks on an absent broker
    assert pub.flush(0.2) is False
    pub.close()
    st = pub.stats()
    assert st["dropped"] == 12  # 7 refused by the full queue, 5 lost at close (no spool)


def _status(sub: Any) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.snapshot() if m.topic.endswith("/status")]


def test_retained_status_and_last_will(mqtt_broker: EmbeddedBroker, mqtt_subscriber: Any, tmp_path: Path) -> None:
    proc = _crashing_publisher(f"{mqtt_broker.uri}/w", tmp_path / "spool", 3)
    try:
        # The child prints before its connection is up: wait until the broker has the status,
        # then a subscriber that joins after must get it as a retained message.
        probe = mqtt_subscriber(mqtt_broker, "w/status", client_id="probe")
        assert probe.wait_for(lambda m: any(json.loads(x.payload)["state"] == "online" for x in m), 10)
        late = mqtt_subscriber(mqtt_broker, "w/status")  # joins after: sees the retained status
        assert late.wait_for(lambda m: any(json.loads(x.payload)["state"] == "online" for x in m), 10)
        assert late.snapshot()[0].retain
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # The broker notices the dead socket at once and publishes the will.
        assert late.wait_for(lambda m: any(json.loads(x.payload)["state"] == "offline" for x in m), 15)
    finally:
        if proc.poll() is None:
            proc.kill()
    offline = [s for s in _status(late) if s["state"] == "offline"][-1]
    assert offline["reason"] == "connection lost" and offline["schema"] == "clipinspect.status"
    after = mqtt_subscriber(mqtt_broker, "w/status", client_id="after")
    assert after.wait_for(lambda m: len(m) >= 1, 10)
    assert _status(after)[-1]["state"] == "offline" and after.snapshot()[-1].retain


def test_clean_close_publishes_offline_shutdown(mqtt_broker: EmbeddedBroker, mqtt_subscriber: Any) -> None:
    pub = open_publisher(f"{mqtt_broker.uri}/s", FAST)
    pub.publish(verdict(0))
    assert pub.flush(10)
    pub.close()
    sub = mqtt_subscriber(mqtt_broker, "s/status")
    assert sub.wait_for(lambda m: len(m) >= 1, 10)
    assert _status(sub)[-1]["state"] == "offline" and _status(sub)[-1]["reason"] == "shutdown"


def test_publish_status_fields_are_retained_and_latest_wins(mqtt_broker: EmbeddedBroker, mqtt_subscriber: Any) -> None:
    pub = open_publisher(f"{mqtt_broker.uri}/st", FAST)
    try:
        pub.publish_status({"bundle_sha256": "ab" * 32, "frames": 1, "state": "hijacked"})
        pub.publish_status({"bundle_sha256": "ab" * 32, "frames": 7})
        pub.publish(verdict(0))
        assert pub.flush(10)
        late = mqtt_subscriber(mqtt_broker, "st/status", client_id="late")  # joins after: retained
        assert late.wait_for(lambda m: any(json.loads(x.payload).get("frames") == 7 for x in m), 10)
        latest = _status(late)[-1]
        assert latest["state"] == "online" and latest["bundle_sha256"] == "ab" * 32 and latest["reason"] == "running"
        assert late.snapshot()[-1].retain
    finally:
        pub.close()
    # jsonl/stdout keep their streams verdict-only
    import io

    from edge_runtime.publish.stdout import StdoutPublisher

    buf = io.StringIO()
    out = StdoutPublisher(stream=buf)
    out.publish_status({"frames": 1})
    assert buf.getvalue() == ""


def test_without_spool_dir_start_up_says_a_crash_loses_memory(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from edge_runtime.publish.broker import free_port

    with caplog.at_level("WARNING"):
        pub = open_publisher(f"mqtt://127.0.0.1:{free_port()}/m", {**FAST, "close_timeout_s": 0.1})
        pub.close()
        durable = open_publisher(
            f"mqtt://127.0.0.1:{free_port()}/m", {**FAST, "close_timeout_s": 0.1, "spool_dir": str(tmp_path / "s")}
        )
        durable.close()
    said = [r.getMessage() for r in caplog.records if "spool_dir" in r.getMessage()]
    assert len(said) == 1 and "a crash or power cut loses" in said[0] and "\n" not in said[0]


def test_publish_many_is_one_group_commit_and_keeps_order(
    mqtt_broker: EmbeddedBroker, mqtt_subscriber: Any, tmp_path: Path
) -> None:
    sub = mqtt_subscriber(mqtt_broker, "g/verdict")
    sub.wait_subscribed()
    pub = open_publisher(f"{mqtt_broker.uri}/g", {**FAST, "spool_dir": str(tmp_path / "spool")})
    pub.publish_many([verdict(i) for i in range(50)])
    pub.publish(verdict(50))
    bad = verdict(52)
    bad["score"] = float("nan")
    with pytest.raises(PublishError, match="cannot be encoded"):
        pub.publish_many([verdict(51), bad, verdict(53)])  # 51 stored, then the error
    assert pub.flush(10) is True
    assert sub.wait_for(_has_all(52))
    pub.close()
    assert _frame_ids(sub) == list(range(52))
    assert pub.stats()["spooled"] == 52


def test_batch_fsync_syncs_an_idle_spool_within_the_interval(tmp_path: Path) -> None:
    """spool_fsync batch promises at most spool_sync_interval_s unsynced, also when no further
    verdict comes: the checkpoint copies the synced WAL into spool.db itself."""
    from edge_runtime.publish.broker import free_port

    spool = tmp_path / "spool"
    pub = open_publisher(
        f"mqtt://127.0.0.1:{free_port()}/b",
        {**FAST, "spool_dir": str(spool), "spool_fsync": "batch", "spool_sync_interval_s": 0.5, "close_timeout_s": 0.1},
    )
    try:
        # Within the first interval after opening: the append itself does not sync.
        marker = "line-stopped-after-this-one"
        v = verdict(1)
        v["model_id"] = marker
        pub.publish(v)
        assert marker.encode() not in (spool / "spool.db").read_bytes()  # only in the WAL yet
        deadline = time.monotonic() + 3
        while marker.encode() not in (spool / "spool.db").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.encode() in (spool / "spool.db").read_bytes()
    finally:
        pub.close()
