"""Parsing source URIs and merging their query parameters into SourceOptions."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl

import yaml

from edge_runtime.config import from_mapping, to_dict
from edge_runtime.errors import ConfigError, SourceError
from edge_runtime.sources.options import SourceOptions

SCHEMES = ("spinnaker", "gentl", "cv", "gst", "folder", "synthetic")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".webm", ".wmv", ".ts", ".mjpeg", ".mjpg")
USAGE = "expected spinnaker://SERIAL, gentl://PATH.cti?serial=S, cv://0, cv://rtsp://..., a video file, gst://PIPELINE, folder://DIR or synthetic://"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class SourceUri:
    raw: str
    scheme: str
    target: str  # what follows scheme:// up to '?' (whole remainder for cv:// and gst://)
    params: Mapping[str, str]


def parse_uri(uri: str) -> SourceUri:
    if not isinstance(uri, str) or not uri.strip():
        raise SourceError(f"empty source URI; {USAGE}")
    uri = uri.strip()
    if "://" not in uri:
        # Bare paths are convenient on the command line: a video file or an image folder.
        p = Path(uri)
        if p.suffix.lower() in VIDEO_SUFFIXES or p.is_file():
            return SourceUri(uri, "cv", uri, {})
        if p.is_dir():
            return SourceUri(uri, "folder", uri, {})
        raise SourceError(f"unknown source URI {uri!r}: no such file or folder; {USAGE}")
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise SourceError(f"unknown source scheme '{scheme}://' in {uri!r}; {USAGE}")
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
            raise SourceError(f"malformed query '{query}' in source URI {uri!r} (expected key=value&key=value)") from None
        for key, value in pairs:
            if key in params:
                raise SourceError(f"query key '{key}' given twice in source URI {uri!r}")
            params[key] = value
    return SourceUri(uri, scheme, target, params)


def merge_options(
    parsed: SourceUri, options: SourceOptions | Mapping[str, Any] | None, own_keys: Iterable[str] = ()
) -> tuple[SourceOptions, dict[str, str]]:
    """Options from the caller, overridden by the URI's query (the URI is the more specific).

    Returns the merged options and the query keys that belong to the source itself
    (`own_keys`, e.g. serial, width). Any other unknown key is an error naming it.
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
    if key not in params:
        return default
    try:
        value = int(params[key])
    except ValueError:
        raise SourceError(f"query key '{key}' in {uri!r} must be an integer, got {params[key]!r}") from None
    if value < minimum:
        raise SourceError(f"query key '{key}' in {uri!r} must be >= {minimum}, got {value}")
    return value
