"""Source URIs and SourceOptions: parsing, merging, and one-line errors."""

from __future__ import annotations

import pytest

from edge_runtime.config import from_mapping, load_config
from edge_runtime.errors import ConfigError, SourceError
from edge_runtime.sources import SourceOptions, make_source, parse_uri
from edge_runtime.sources.uri import merge_options


def test_parse_forms(tmp_path):
    assert parse_uri("spinnaker://1234").target == "1234"
    u = parse_uri("gentl:///opt/x.cti?serial=77")
    assert (u.scheme, u.target, dict(u.params)) == ("gentl", "/opt/x.cti", {"serial": "77"})
    assert parse_uri("gentl://?serial=5").target == ""
    rtsp = parse_uri("cv://rtsp://user:pw@10.0.0.2:554/stream?channel=1&subtype=0")
    assert (rtsp.scheme, rtsp.target, dict(rtsp.params)) == (
        "cv",
        "rtsp://user:pw@10.0.0.2:554/stream?channel=1&subtype=0",
        {},
    )
    gst = parse_uri("gst://nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1920 ! nvvidconv ! appsink")
    assert gst.scheme == "gst" and gst.target.startswith("nvarguscamerasrc")
    assert parse_uri("clip.mp4").scheme == "cv"
    assert parse_uri(str(tmp_path)).scheme == "folder"
    assert dict(parse_uri("folder://imgs?fps=2.5&loop=1").params) == {"fps": "2.5", "loop": "1"}


@pytest.mark.parametrize(
    "uri, message",
    [
        ("ftp://camera", "unknown source scheme 'ftp://'"),
        ("/no/such/thing", "no such file or folder"),
        ("", "empty source URI"),
        ("folder://x?fps", "malformed query"),
        ("folder://x?fps=1&fps=2", "given twice"),
        ("folder://x?speed=2", "unknown query key 'speed'"),
        ("spinnaker://1?serial=2", "unknown query key 'serial'"),
        ("gst://", "names nothing"),
        ("folder://x?loop=maybe", "loop"),
        ("folder://x?roi=1,2,3", "roi"),
        ("synthetic://?trigger=sometimes", "trigger"),
    ],
)
def test_bad_uris_are_one_line_source_errors(uri, message):
    with pytest.raises(SourceError) as err:
        make_source(uri)
    text = str(err.value)
    assert message in text and "\n" not in text


def test_query_overrides_options_and_types_are_parsed():
    base = SourceOptions(fps=5.0, exposure_us=100.0, loop=False)
    opts, own = merge_options(
        parse_uri("gentl://?serial=9&fps=12&loop=yes&roi=0,0,64,32&pixel_format=Mono8"), base, ("serial",)
    )
    assert own == {"serial": "9"}
    assert opts.fps == 12.0 and opts.loop is True and opts.roi == (0, 0, 64, 32) and opts.pixel_format == "Mono8"
    assert opts.exposure_us == 100.0  # untouched fields keep the caller's value
    opts, _ = merge_options(parse_uri("spinnaker://1?trigger=off&trigger_edge=FallingEdge"), {"trigger": "software"})
    assert opts.trigger == "off" and opts.trigger_edge == "FallingEdge"
    opts, _ = merge_options(parse_uri("folder://d"), {"buffer_count": 8})
    assert opts.buffer_count == 8 and opts.buffer_handling == "NewestOnly"


def test_options_from_yaml_mapping_reject_unknown_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'source.exposure' \(did you mean 'exposure_us'\?\)"):
        from_mapping(SourceOptions, {"exposure": 100}, where="source")
    with pytest.raises(ConfigError, match="timeout_ms"):
        from_mapping(SourceOptions, {"timeout_ms": 0})
    with pytest.raises(ConfigError, match="trigger_line"):
        from_mapping(SourceOptions, {"trigger_line": "GPIO3"})
    opts = load_config(SourceOptions, overrides=["trigger=software", "roi=[0,0,16,16]", "buffer_handling=OldestFirst"])
    assert opts.trigger == "software" and opts.roi == (0, 0, 16, 16) and opts.buffer_handling == "OldestFirst"


def test_backoff_grows_and_is_capped():
    o = SourceOptions(reconnect_backoff_s=0.5)
    assert [o.backoff(i) for i in range(3)] == [0.5, 1.0, 2.0]
    assert o.backoff(20) == 30.0


def test_unapplied_option_is_warned(caplog):
    src = make_source("synthetic://?width=8&height=8&count=1", {"exposure_us": 100.0})
    with src:
        list(src.frames())
    assert any("exposure_us" in r.getMessage() and "not applied" in r.getMessage() for r in caplog.records)
