"""Verdict publishers, picked by URI.

  mqtt://[user[:password]@]host[:port][/topic/prefix]    plain MQTT (port 1883)
  mqtts://[user[:password]@]host[:port][/topic/prefix]   MQTT over TLS (port 8883)
  jsonl://path/to/file.jsonl   (jsonl:///abs/path.jsonl)  append one JSON per line
  stdout://                                               one JSON per line on stdout

Options (PublishOptions, the `publish:` section of the device config) tune MQTT: QoS,
client id, TLS files, credentials, queue and spool sizes, reconnect backoff.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

from edge_runtime.errors import PublishError
from edge_runtime.publish.base import Publisher
from edge_runtime.publish.options import PublishOptions, TLSOptions

SCHEMES = ("mqtt", "mqtts", "jsonl", "stdout")

__all__ = ["Publisher", "PublishOptions", "TLSOptions", "open_publisher", "SCHEMES"]


def open_publisher(uri: str, options: PublishOptions | Mapping[str, Any] | None = None) -> Publisher:
    """Open the publisher for `uri`. Raises PublishError (one line) for a bad URI or setup."""
    if options is None:
        options = PublishOptions()
    elif not isinstance(options, PublishOptions):
        options = PublishOptions.from_mapping(options)
    if not isinstance(uri, str) or "://" not in uri:
        raise PublishError(f"publisher URI {uri!r} must look like scheme://...; schemes: {', '.join(SCHEMES)}")
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme == "stdout":
        if rest not in ("", "-"):
            raise PublishError(f"publisher URI {uri!r}: stdout:// takes nothing after the scheme")
        from edge_runtime.publish.stdout import StdoutPublisher

        return StdoutPublisher(uri)
    if scheme == "jsonl":
        if not rest or rest.endswith("/"):
            raise PublishError(f"publisher URI {uri!r}: give a file, e.g. jsonl://verdicts.jsonl")
        from edge_runtime.publish.jsonl import JsonlPublisher

        return JsonlPublisher(uri, unquote(rest))
    if scheme in ("mqtt", "mqtts"):
        return _open_mqtt(uri, scheme, options)
    raise PublishError(f"publisher URI {uri!r}: unknown scheme '{scheme}'; use one of {', '.join(SCHEMES)}")


def _open_mqtt(uri: str, scheme: str, options: PublishOptions) -> Publisher:
    from edge_runtime.publish.mqtt import MQTTPublisher, _redact

    shown = _redact(uri)
    if "#" in uri or "+" in uri.split("://", 1)[1].split("@")[-1]:
        raise PublishError(f"publisher URI {shown}: topic prefix must not hold wildcards (# or +)")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise PublishError(f"publisher URI {shown}: {exc}") from None
    if not parts.hostname:
        raise PublishError(f"publisher URI {shown}: no broker host")
    if parts.query or parts.fragment:
        raise PublishError(f"publisher URI {shown}: query strings are not supported; use the publish options")
    prefix = unquote(parts.path.strip("/")) or options.topic_prefix
    username = unquote(parts.username) if parts.username else options.username
    password = options.resolve_password(unquote(parts.password) if parts.password else None)
    tls = scheme == "mqtts"
    if not tls and (options.tls.ca_file or options.tls.cert_file):
        raise PublishError(f"publisher URI {shown}: TLS files are set in publish.tls but the scheme is mqtt://; use mqtts://")
    return MQTTPublisher(
        uri,
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=username,
        password=password,
        topic_prefix=prefix,
        options=options,
    )
