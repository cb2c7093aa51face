"""Parsing source URIs and merging their query parameters into SourceOptions.

Which schemes exist is the table in `edge_runtime.sources.table` (`SOURCES`); this module knows
only the URI shapes: `scheme://TARGET?key=value&...`, the opaque `cv://URL` and
`gst://PIPELINE`, and bare paths.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import yaml

from edge_runtime.config import from_mapping, to_dict
from edge_runtime.errors import ConfigError, SourceError
from edge_runtime.sources.options import SourceOptions
from edge_runtime.sources.table import SOURCES

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".webm", ".wmv", ".ts", ".mjpeg", ".mjpg")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class SourceUri:
    """A parsed source URI.

    Attributes:
        raw: the URI as given (stripped), for messages and frame meta.
        scheme: the table row it selects (`cv` or `folder` for a bare path).
        target: what follows `scheme://` up to '?' (the whole remainder for cv:// URLs and gst://).
        params: the query keys and values, each key at most once.
    """

    raw: str
    scheme: str
    target: str
    params: Mapping[str, str]


def usage() -> str:
    """What a source URI may look like, from the table: the tail of every URI error."""
    schemes = [f"{key}://" for entry in SOURCES for key in (entry.name, *entry.aliases)]
    return f"use one of {', '.join(schemes)} or a path to a video file or image folder"


def _known_scheme(scheme: str) -> bool:
    return scheme in SOURCES


def parse_uri(uri: str) -> SourceUri:
    """Split a source URI into scheme, target and query (nothing is opened).

    Args:
        uri: `scheme://TARGET?key=value&...`, `cv://URL`, `gst://PIPELINE` or a bare path.

    Returns:
        The parsed URI; a bare path becomes scheme `cv` (a video suffix or a file) or
        `folder` (a directory).

    Raises:
        SourceError: empty URI, unknown scheme, missing path, malformed or repeated query key.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise SourceError(f"empty source URI; {usage()}")
    uri = uri.strip()
    if "://" not in uri:
        # Bare paths are convenient on the command line: a video file or an image folder.
        p = Path(uri)
        if p.suffix.lower() in VIDEO_SUFFIXES or p.is_file():
            return SourceUri(uri, "cv", uri, {})
        if p.is_dir():
            return SourceUri(uri, "folder", uri, {})
        raise SourceError(f"unknown source URI {uri!r}: no such file or folder; {usage()}")
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if not _known_scheme(scheme):
        raise SourceError(f"unknown source scheme '{scheme}://' in {uri!r}; {usage()}")
    if scheme == "gst" or (scheme == "cv" and "://" in rest):
        # A pipeline or a stream URL keeps its own '?' and '&'.
        if not rest:
            raise SourceError(f"source URI {uri!r} names nothing after '{scheme}://'")
        return SourceUri(uri, scheme, rest, {})
    target, _, query = rest.partition("?")
    params: dict[str, str] = {}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise SourceError(
                f"malformed query '{query}' in source URI {uri!r} (expected key=value&key=value)"
            ) from None
        for key, value in pairs:
            if key in params:
                raise SourceError(f"query key '{key}' given twice in source URI {uri!r}")
            params[key] = value
    return SourceUri(uri, scheme, target, params)


def merge_options(
    parsed: SourceUri, options: SourceOptions | Mapping[str, Any] | None, own_keys: Iterable[str] = ()
) -> tuple[SourceOptions, dict[str, str]]:
    """Options from the caller, overridden by the URI's query (the URI is the more specific).

    Args:
        parsed: the parsed URI.
        options: the caller's SourceOptions, a mapping of their fields, or None for defaults.
        own_keys: query keys that belong to the source itself (e.g. serial, width).

    Returns:
        The merged options and the source's own query keys with their (text) values.

    Raises:
        SourceError: a query key that is neither an option nor one of `own_keys`, or a
            value the option does not accept (one line naming it).
    """
    if options is None:
        base: dict[str, Any] = {}
    elif isinstance(options, SourceOptions):
        base = to_dict(options)
    else:
        base = dict(options)
    own = set(own_keys)
    fields = {f.name for f in dataclasses.fields(SourceOptions)}
    hints = typing.get_type_hints(SourceOptions)
    mine: dict[str, str] = {}
    for key, raw in parsed.params.items():
        if key in own:
            mine[key] = raw
        elif key in fields:
            base[key] = _query_value(raw, hints[key])
        else:
            allowed = ", ".join(sorted(own | fields))
            raise SourceError(f"unknown query key '{key}' in source URI {parsed.raw!r} (known: {allowed})")
    try:
        merged = from_mapping(SourceOptions, base, where="source")
    except ConfigError as exc:
        raise SourceError(f"bad source options for {parsed.raw!r}: {exc}") from None
    return merged, mine


def _query_value(raw: str, tp: Any) -> Any:
    args = set(typing.get_args(tp)) | {tp}
    if bool in args:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        return raw
    if any(typing.get_origin(a) is tuple for a in args):
        parts = [p for p in raw.replace("[", "").replace("]", "").split(",") if p.strip()]
        return [_scalar(p) for p in parts]
    if str in args or any(typing.get_origin(a) is typing.Literal for a in args):
        return raw  # YAML would turn 'off' into False
    return _scalar(raw)


def _scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def int_param(params: Mapping[str, str], key: str, default: int, uri: str, *, minimum: int = 0) -> int:
    """One integer query value of a source's own keys.

    Args:
        params: the source's own query keys and values.
        key: the key to read.
        default: the value when `key` is absent.
        uri: the URI, for messages.
        minimum: the smallest value allowed.

    Returns:
        The value, or `default`.

    Raises:
        SourceError: not an integer, or below `minimum`.
    """
    if key not in params:
        return default
    try:
        value = int(params[key])
    except ValueError:
        raise SourceError(f"query key '{key}' in {uri!r} must be an integer, got {params[key]!r}") from None
    if value < minimum:
        raise SourceError(f"query key '{key}' in {uri!r} must be >= {minimum}, got {value}")
    return value
