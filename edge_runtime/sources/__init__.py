"""Frame sources, picked by URI from one table, `SOURCES` (scheme -> source class).

Query keys that name SourceOptions fields (fps, loop, exposure_us, timeout_ms, ...) override
the options passed in; a source's own keys (a GenTL serial, a synthetic width) go to the
source; any other key is an error naming it. A bare path (no `scheme://`) is a video file
(`cv`) when it has a video suffix or is a file, and an image folder (`folder`) when it is a
directory. `cv://rtsp://...` and `gst://PIPELINE` keep their own '?' and '&'.

Adding a source is one module holding a `SourceBase` subclass plus one `Entry` row in
`edge_runtime/sources/table.py`;
URI validation, `--source` help, `doctor` and `make_source` all read the table.

The table (scheme, URI form, what it is):

"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge_runtime.frames import FrameSource
from edge_runtime.sources.options import SourceOptions
from edge_runtime.sources.table import SOURCES
from edge_runtime.sources.uri import parse_uri

__all__ = ["SOURCES", "SourceOptions", "open_source", "make_source", "parse_uri", "uri_help"]

__doc__ = (__doc__ or "") + SOURCES.help_text(indent="    ") + "\n"


def uri_help() -> str:
    """The URI forms of every table row on one line, for `--source` help texts.

    Returns:
        "FORM - what it is; FORM - what it is; ..." (argparse reflows it; escape '%' there).
    """
    return "; ".join(entry.summary for entry in SOURCES)


def make_source(uri: str, options: SourceOptions | Mapping[str, Any] | None = None) -> FrameSource:
    """Build the source for `uri` without opening it (no device, file or SDK is touched).

    Args:
        uri: a source URI (see the table in this module's doc) or a bare video/folder path.
        options: SourceOptions or a mapping of their fields; the URI's query overrides them.

    Returns:
        The source (a `SourceBase`), not yet opened; it is a context manager.

    Raises:
        SourceError: bad URI, unknown scheme or query key, bad option value (one line).
        MissingDependency: the source's module cannot be imported.
    """
    parsed = parse_uri(uri)
    return SOURCES.load(parsed.scheme).from_uri(parsed, options)


def open_source(uri: str, options: SourceOptions | Mapping[str, Any] | None = None) -> FrameSource:
    """Build and open the source for `uri`.

    Args:
        uri: as for `make_source`.
        options: as for `make_source`.

    Returns:
        The opened source; use it as a context manager (`close()` is idempotent).

    Raises:
        SourceError: as for `make_source`, or the device/file cannot be opened.
        MissingDependency: the vendor SDK or package the source needs is missing.
    """
    source = make_source(uri, options)
    source.open()
    return source
