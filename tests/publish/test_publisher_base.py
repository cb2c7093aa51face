"""PublisherBase's life cycle, the same for every scheme: the closed check once (one-line
PublishError), idempotent close that never raises, context manager, and weakref.finalize
releasing a forgotten publisher's threads, files and sqlite handle."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.errors import PublishError
from edge_runtime.publish import PUBLISHERS, PublisherBase, open_publisher
from edge_runtime.publish.broker import free_port
from tests.publish.helpers import verdict

FAST = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.2, "close_timeout_s": 0.2}


def _uri(scheme: str, tmp_path: Path) -> str:
    return {
        "mqtt": f"mqtt://127.0.0.1:{free_port()}/base",  # nothing listens: verdicts wait
        "mqtts": f"mqtts://127.0.0.1:{free_port()}/base",
        "jsonl": f"jsonl://{tmp_path / 'v.jsonl'}",
        "stdout": "stdout://",
        "null": "null://",
    }[scheme]


@pytest.mark.parametrize("scheme", PUBLISHERS.names())
def test_every_scheme_shares_the_life_cycle(scheme: str, tmp_path: Path) -> None:
    with open_publisher(_uri(scheme, tmp_path), FAST) as pub:
        assert isinstance(pub, PublisherBase) and type(pub).scheme in (scheme, "mqtt")
        pub.publish(verdict(0))
        pub.publish_status({"fps": 1.0})
        assert pub.stats()["published"] == 1
    assert pub.closed
    pub.close()  # a second close does nothing
    with pytest.raises(PublishError) as exc:
        pub.publish_many([verdict(1)])
    assert str(exc.value).endswith("publish() after close()") and "\n" not in str(exc.value)
    pub.publish_status({"fps": 2.0})  # ignored, no error


def _sender_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mqtt-sender-")]


@pytest.mark.timeout(30)
def test_forgotten_mqtt_publisher_is_released_by_its_finalizer(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    before = len(_sender_threads())
    pub = open_publisher(f"mqtt://127.0.0.1:{free_port()}/gc", {**FAST, "spool_dir": str(spool)})
    pub.publish(verdict(0))
    assert len(_sender_threads()) == before + 1
    del pub  # never closed
    gc.collect()
    deadline = time.monotonic() + 10
    while len(_sender_threads()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_sender_threads()) == before  # the sender thread stopped
    # The sqlite handle and the spool's flock are released: a new publisher opens the same
    # spool and finds the stored verdict.
    again = open_publisher(f"mqtt://127.0.0.1:{free_port()}/gc", {**FAST, "spool_dir": str(spool)})
    try:
        assert again.stats()["recovered"] == 1
    finally:
        again.close()


def test_teardown_failure_is_logged_not_raised(tmp_path: Path, caplog: Any) -> None:
    pub = open_publisher(f"jsonl://{tmp_path / 'v.jsonl'}")
    pub.publish(verdict(0))
    os.close(pub._fh.fileno())  # the disk goes away under it
    with caplog.at_level(logging.ERROR):
        pub.close()
    assert pub.closed and "releasing resources failed" in caplog.text


def test_flush_after_close_tells_whether_close_delivered(tmp_path: Path) -> None:
    pub = open_publisher(f"mqtt://127.0.0.1:{free_port()}/x", {**FAST, "spool_dir": str(tmp_path / "spool")})
    pub.publish(verdict(0))  # nothing listens: it stays in the spool
    pub.close()
    assert pub.flush() is False and pub.stats()["spool_pending"] == 1
