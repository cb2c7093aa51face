"""Verdict publishers, picked by URI scheme from one table, `PUBLISHERS`.

Each row names its class as "module:Class" (imported only when that scheme is opened, so
looking up, `--help` and `doctor` never import paho); the class's `from_uri(uri, options)`
holds its own URI validation. `PUBLISHERS.help_text()` lists the URI forms.

Options (PublishOptions, the `publish:` section of the device config) tune MQTT: QoS,
client id, TLS files, credentials, queue and spool sizes, reconnect backoff.

Adding a scheme: one new module with a `PublisherBase` subclass (edge_runtime/publish/base.py)
and one `Entry` row below (or `PUBLISHERS.register(Entry(...))` from a plug-in).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge_runtime.errors import PublishError
from edge_runtime.publish.base import Publisher, PublisherBase
from edge_runtime.publish.options import PublishOptions, TLSOptions
from edge_runtime.registry import Entry, Registry

__all__ = ["PUBLISHERS", "Publisher", "PublisherBase", "PublishOptions", "TLSOptions", "open_publisher", "uri_help"]

_OPTIONS = "edge_runtime.publish.options:PublishOptions"

PUBLISHERS = Registry(
    "publisher",
    [
        Entry(
            "mqtt",
            "edge_runtime.publish.mqtt:MQTTPublisher",
            _OPTIONS,
            summary="mqtt://[user[:password]@]host[:port][/topic/prefix]  plain MQTT (port 1883)",
            requires=("paho",),
        ),
        Entry(
            "mqtts",
            "edge_runtime.publish.mqtt:MQTTPublisher",
            _OPTIONS,
            summary="mqtts://[user[:password]@]host[:port][/topic/prefix]  MQTT over TLS (port 8883)",
            requires=("paho", "ssl"),
        ),
        Entry(
            "jsonl",
            "edge_runtime.publish.jsonl:JsonlPublisher",
            summary="jsonl://FILE (jsonl:///abs/path)  one JSON per line, appended",
        ),
        Entry(
            "stdout", "edge_runtime.publish.stdout:StdoutPublisher", summary="stdout://  one JSON per line on stdout"
        ),
        Entry(
            "null",
            "edge_runtime.publish.null:NullPublisher",
            summary="null://  accept and forget (bench: no publishing cost)",
        ),
    ],
    error=PublishError,
)


def uri_help() -> str:
    """The URI forms of every registered scheme, on one line (for `--publish` help texts).

    Returns:
        e.g. "mqtt://[user[:password]@]host[:port][/topic/prefix], ..., null://".
    """
    return ", ".join(entry.summary.split()[0] if entry.summary else f"{entry.name}://" for entry in PUBLISHERS)


def open_publisher(uri: str, options: PublishOptions | Mapping[str, Any] | None = None) -> Publisher:
    """Open the publisher for `uri`: the table row for its scheme, then the class's from_uri.

    Args:
        uri: `scheme://...`; the schemes are the rows of `PUBLISHERS`.
        options: PublishOptions, or the `publish.options` mapping (validated here).

    Returns:
        The open publisher (a context manager; close() is idempotent).

    Raises:
        PublishError: one line, for a bad URI, an unknown scheme or a failed set-up.
        ConfigError: an unknown or invalid option.
        MissingDependency: the scheme's module needs a package that is not installed.
    """
    if options is None:
        options = PublishOptions()
    elif not isinstance(options, PublishOptions):
        options = PublishOptions.from_mapping(options)
    names = ", ".join(PUBLISHERS.names())
    if not isinstance(uri, str) or "://" not in uri:
        raise PublishError(f"publisher URI {uri!r} must look like scheme://...; schemes: {names}")
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in PUBLISHERS:
        raise PublishError(f"publisher URI {uri!r}: unknown scheme '{scheme}'; use one of {names}")
    return PUBLISHERS.load(scheme).from_uri(uri, options)
