"""The source table, `SOURCES`: URI scheme -> "module:Class" of a `SourceBase` subclass.

Kept apart from the package `__init__` so that `uri.py` (which validates schemes and writes
the usage text from it) and the package can both import it at module level, with no cycle.
Adding a source is one module plus one `Entry` row here.
"""

from __future__ import annotations

from edge_runtime.errors import SourceError
from edge_runtime.registry import Entry, Registry

_OPTIONS = "edge_runtime.sources.options:SourceOptions"

SOURCES = Registry(
    "source",
    [
        Entry(
            "spinnaker",
            "edge_runtime.sources.spinnaker:SpinnakerSource",
            _OPTIONS,
            summary="spinnaker://SERIAL or spinnaker:// (first camera) - a FLIR camera through PySpin",
            requires=("PySpin",),
        ),
        Entry(
            "gentl",
            "edge_runtime.sources.gentl:GenTLSource",
            _OPTIONS,
            summary="gentl://PATH.cti?serial=S or gentl://?serial=S (producers from GENICAM_GENTL64_PATH)"
            " - any GenICam camera through harvesters",
            requires=("harvesters", "genicam"),
        ),
        Entry(
            "cv",
            "edge_runtime.sources.opencv:OpenCVSource",
            _OPTIONS,
            summary="cv://0, cv://rtsp://..., cv://FILE.mp4, a video file path or gst://PIPELINE - OpenCV VideoCapture",
            requires=("cv2",),
            aliases=("gst",),
        ),
        Entry(
            "folder",
            "edge_runtime.sources.folder:FolderSource",
            _OPTIONS,
            summary="folder://DIR?fps=5&loop=1 or a folder path - replay image files in name order",
            requires=("cv2",),
        ),
        Entry(
            "synthetic",
            "edge_runtime.sources.synthetic:SyntheticSource",
            _OPTIONS,
            summary="synthetic://?width=640&height=480&count=100&pixel_format=BayerRG8"
            " - generated textured parts, a scratch every defect_every (also seed, ring)",
            requires=("cv2",),
        ),
    ],
    error=SourceError,
)
