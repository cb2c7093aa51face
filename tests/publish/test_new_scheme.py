"""Adding a publisher scheme touches one new file (tests/publish/memory_publisher.py) and one
table row (the fixture below): then `clipinspect run` publishes to it, and the unknown-scheme
error, `run --help` and `doctor` list it; the publisher gets the base's life cycle for free."""

from __future__ import annotations

import json
from typing import Any

import pytest

import edge_runtime.publish as publish
from edge_runtime.cli import main
from edge_runtime.errors import PublishError
from edge_runtime.registry import Entry, Registry
from edge_runtime.verdict import validate_verdict
from tests.publish.memory_publisher import SINKS, MemoryPublisher

ROW = Entry(
    "memory",
    "tests.publish.memory_publisher:MemoryPublisher",
    summary="memory://NAME  test-only: verdicts kept in a list",
)


@pytest.fixture
def memory_scheme(monkeypatch: pytest.MonkeyPatch) -> Registry:
    """The PUBLISHERS table plus one row, for this test only."""
    table = Registry("publisher", [*publish.PUBLISHERS.entries, ROW], error=PublishError)
    monkeypatch.setattr(publish, "PUBLISHERS", table)
    return table


def test_run_publishes_to_the_new_scheme(memory_scheme: Registry, toy_bundle: Any) -> None:
    SINKS.pop("line7", None)
    argv = [
        "run",
        "--bundle",
        str(toy_bundle.root),
        "--source",
        "synthetic://?width=64&height=64&count=5",
        "--publish",
        "memory://line7",
        "--set",
        "pipeline.drop_policy=block",
    ]
    assert main(argv) == 0
    verdicts = SINKS["line7"]
    assert [v["frame_id"] for v in verdicts] == [0, 1, 2, 3, 4]
    assert all(validate_verdict(v) == [] for v in verdicts)


def test_errors_help_and_doctor_list_the_new_scheme(memory_scheme: Registry, toy_bundle: Any, capsys: Any) -> None:
    rc = main(["run", "--bundle", str(toy_bundle.root), "--source", "synthetic://", "--publish", "kafka://x"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert "unknown scheme 'kafka'; use one of mqtt, mqtts, jsonl, stdout, null, memory" in err
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "memory://NAME" in capsys.readouterr().out
    assert main(["doctor", "--json"]) == 0
    rows = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert rows["publisher memory"]["status"] == "ok" and rows["publisher memory"]["detail"].startswith("memory://NAME")


def test_the_new_scheme_gets_the_base_life_cycle(memory_scheme: Registry) -> None:
    with publish.open_publisher("memory://lc") as pub:
        assert isinstance(pub, MemoryPublisher) and isinstance(pub, publish.Publisher)
        pub.publish({"frame_id": 1})
        pub.publish_status({"fps": 1.0})
    pub.close()  # idempotent
    assert pub.closed and pub.flush() is True and pub.stats()["published"] == 1
    with pytest.raises(PublishError, match=r"^memory://lc: publish\(\) after close\(\)$"):
        pub.publish({"frame_id": 2})
    pub.publish_status({"fps": 2.0})  # ignored after close
    assert pub.statuses == [{"fps": 1.0}]
    with pytest.raises(PublishError, match="give a name"):
        publish.open_publisher("memory://")


def test_without_the_row_the_scheme_is_unknown() -> None:
    with pytest.raises(PublishError, match="unknown scheme 'memory'; use one of mqtt, mqtts, jsonl, stdout, null$"):
        publish.open_publisher("memory://x")
