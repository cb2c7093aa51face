"""URI parsing, options, and the jsonl/stdout publishers (no broker needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_runtime.errors import ConfigError, PublishError
from edge_runtime.publish import Publisher, PublishOptions, open_publisher
from edge_runtime.publish.broker import free_port
from edge_runtime.verdict import validate_verdict
from tests.publish.helpers import verdict


@pytest.mark.parametrize(
    "uri, fragment",
    [
        ("kafka://host/topic", "unknown scheme 'kafka'"),
        ("verdicts.jsonl", "must look like scheme://"),
        ("mqtt://", "no broker host"),
        ("mqtt://host:notaport/x", "Port could not be cast"),
        ("mqtt://host/a/#", "wildcards"),
        ("mqtt://host/x?qos=2", "query strings"),
        ("jsonl://", "give a file"),
        ("stdout://somewhere", "stdout:// takes nothing"),
        ("null://x", "null:// takes nothing"),
        ("null://-", "null:// takes nothing"),
    ],
)
def test_bad_uri_is_one_line_publish_error(uri: str, fragment: str) -> None:
    with pytest.raises(PublishError) as exc:
        open_publisher(uri)
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("uri", ["stdout://", "stdout://-", "null://"])
def test_target_less_publishers_open_from_their_bare_uri(uri: str) -> None:
    with open_publisher(uri) as publisher:
        assert publisher.uri == uri and publisher.scheme == uri.split(":")[0]


def test_password_in_uri_is_not_echoed_in_errors() -> None:
    with pytest.raises(PublishError) as exc:
        open_publisher("mqtt://bob:s3cret@host/x?a=1")
    assert "s3cret" not in str(exc.value) and "bob:***@" in str(exc.value)


def test_unknown_option_key_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'publish.qoss'.*did you mean 'qos'"):
        PublishOptions.from_mapping({"qoss": 1})
    with pytest.raises(ConfigError, match="publish.tls.cafile"):
        PublishOptions.from_mapping({"tls": {"cafile": "x"}})
    with pytest.raises(ConfigError, match="qos must be 0, 1 or 2"):
        PublishOptions.from_mapping({"qos": 3})
    with pytest.raises(ConfigError, match="cert_file and tls.key_file"):
        PublishOptions.from_mapping({"tls": {"cert_file": "c.pem"}})


def test_password_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPINSPECT_MQTT_PASSWORD", "from-env")
    assert PublishOptions().resolve_password(None) == "from-env"
    assert PublishOptions(password="from-config").resolve_password(None) == "from-config"
    assert PublishOptions(password="from-config").resolve_password("from-uri") == "from-uri"
    monkeypatch.setenv("OTHER_VAR", "other")
    assert PublishOptions(password_env="OTHER_VAR").resolve_password(None) == "other"
    monkeypatch.delenv("CLIPINSPECT_MQTT_PASSWORD")
    assert PublishOptions().resolve_password(None) is None


def test_missing_tls_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(PublishError, match=r"publish.tls.ca_file: file not found: .*ca.pem"):
        open_publisher(f"mqtts://127.0.0.1:{free_port()}/x", {"tls": {"ca_file": str(missing)}})
    with pytest.raises(PublishError, match="use mqtts://"):
        open_publisher(f"mqtt://127.0.0.1:{free_port()}/x", {"tls": {"ca_file": str(missing)}})


def test_unwritable_spool_dir_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(PublishError, match=r"spool directory .*file/spool is not writable"):
        open_publisher(f"mqtt://127.0.0.1:{free_port()}/x", {"spool_dir": str(blocker / "spool")})


def test_jsonl_appends_valid_verdicts(tmp_path: Path) -> None:
    target = tmp_path / "out" / "verdicts.jsonl"
    pub = open_publisher(f"jsonl://{target}")
    assert isinstance(pub, Publisher)
    for i in range(3):
        pub.publish(verdict(i))
    assert pub.flush() is True
    pub.close()
    pub2 = open_publisher(f"jsonl://{target}")  # a second run appends
    pub2.publish(verdict(3))
    pub2.close()
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["frame_id"] for r in rows] == [0, 1, 2, 3]
    assert all(validate_verdict(r) == [] for r in rows)
    with pytest.raises(PublishError, match="after close"):
        pub2.publish(verdict(4))


def test_jsonl_rejects_non_json_verdict(tmp_path: Path) -> None:
    pub = open_publisher(f"jsonl://{tmp_path / 'v.jsonl'}")
    with pytest.raises(PublishError, match="cannot be encoded as JSON"):
        pub.publish({"score": float("nan")})
    pub.close()


def test_jsonl_unopenable_path(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(PublishError, match="cannot open .*f/v.jsonl"):
        open_publisher(f"jsonl://{tmp_path / 'f' / 'v.jsonl'}")


def test_stdout_prints_one_json_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    pub = open_publisher("stdout://")
    pub.publish(verdict(7))
    pub.publish(verdict(8))
    pub.close()
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["frame_id"] for x in lines] == [7, 8]
    assert pub.stats()["published"] == 2


def test_jsonl_lines_reach_the_file_before_publish_returns(tmp_path: Path) -> None:
    """A crash right after publish() must not lose a counted verdict sitting in a buffer:
    another reader of the file sees every line at once, without flush() or close()."""
    out = tmp_path / "v.jsonl"
    pub = open_publisher(f"jsonl://{out}")
    pub.publish(verdict(0))
    pub.publish_many([verdict(1), verdict(2)])
    assert [json.loads(x)["frame_id"] for x in out.read_text().splitlines()] == [0, 1, 2]
    pub.close()
