"""Frame sources, picked by URI.

    spinnaker://SERIAL | spinnaker://        FLIR camera through PySpin (first camera if no serial)
    gentl://PATH.cti?serial=S | gentl://?serial=S   any GenICam camera through harvesters
                                             (producers from GENICAM_GENTL64_PATH when no PATH)
    cv://0 | cv://rtsp://... | cv://file.mp4 | file.mp4 | gst://PIPELINE   OpenCV VideoCapture
    folder://DIR?fps=5&loop=1                replay image files
    synthetic://?width=640&height=480&fps=30&count=100&pixel_format=BayerRG8&seed=0&defect_every=10

Query keys that name SourceOptions fields (fps, loop, exposure_us, timeout_ms, ...) override
the options passed in; an unknown key is an error naming it.
"""

from __future__ import annotations

from typing import Any, Mapping

from edge_runtime.frames import FrameSource
from edge_runtime.sources.options import SourceOptions
from edge_runtime.sources.uri import parse_uri

__all__ = ["SourceOptions", "open_source", "make_source", "parse_uri"]


def make_source(uri: str, options: SourceOptions | Mapping[str, Any] | None = None) -> FrameSource:
    """Build the source for `uri` without opening it (no device is touched)."""
    from edge_runtime.sources.uri import merge_options

    parsed = parse_uri(uri)
    if parsed.scheme == "spinnaker":
        from edge_runtime.sources.spinnaker import SpinnakerSource

        opts, _ = merge_options(parsed, options)
        return SpinnakerSource(parsed, opts)
    if parsed.scheme == "gentl":
        from edge_runtime.sources.gentl import OWN_KEYS, GenTLSource

        opts, own = merge_options(parsed, options, OWN_KEYS)
        return GenTLSource(parsed, opts, own)
    if parsed.scheme in ("cv", "gst"):
        from edge_runtime.sources.opencv import OpenCVSource

        opts, _ = merge_options(parsed, options)
        return OpenCVSource(parsed, opts)
    if parsed.scheme == "folder":
        from edge_runtime.sources.folder import FolderSource

        opts, _ = merge_options(parsed, options)
        return FolderSource(parsed, opts)
    from edge_runtime.sources.synthetic import OWN_KEYS as SYN_KEYS, SyntheticSource

    opts, own = merge_options(parsed, options, SYN_KEYS)
    return SyntheticSource(parsed, opts, own)


def open_source(uri: str, options: SourceOptions | Mapping[str, Any] | None = None) -> FrameSource:
    """Build and open the source for `uri`. Raises SourceError / MissingDependency (one line).

    The returned source is a context manager; `close()` is idempotent."""
    source = make_source(uri, options)
    source.open()
    return source
