"""folder://DIR?fps=..&loop=1 — replay image files in name order, like a camera.

A replay must survive the files found on real drop folders: a file that is empty, cannot be
decoded, is larger than `max_pixels` (decompression bombs) or has another size than the
first good frame ('odd_size': a stream must keep one geometry for batching and ROI) is
counted under that reason in stats() and skipped; the replay goes on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge_runtime.errors import DataError, SourceError
from edge_runtime.frames import Frame
from edge_runtime.imageio import IMAGE_SUFFIXES, read_rgb
from edge_runtime.sources.base import EndOfStream, Pacer, SourceBase
from edge_runtime.sources.options import SourceOptions
from edge_runtime.sources.uri import SourceUri

log = logging.getLogger(__name__)


def list_images(folder: Path) -> list[Path]:
    """The image files (by suffix) directly in `folder`, in name order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class FolderSource(SourceBase):
    """Replays the image files of a folder as RGB8 frames, like a camera.

    Args:
        parsed: a `folder://DIR` URI (or a bare directory path parsed as `folder`).
        options: fps, loop, max_pixels are applied.

    Raises:
        SourceError: no directory named.
    """

    stat_keys = ("empty", "corrupt", "huge", "odd_size", "missing", "passes")
    applies = frozenset(
        {
            "fps",
            "loop",
            "max_pixels",
            "timeout_ms",
            "buffer_count",
            "buffer_handling",
            "reconnect",
            "reconnect_attempts",
            "reconnect_backoff_s",
        }
    )

    def __init__(self, parsed: SourceUri, options: SourceOptions) -> None:
        super().__init__(parsed.raw, options)
        if not parsed.target:
            raise SourceError(f"folder source needs a directory: folder://DIR, got {parsed.raw!r}")
        self.folder = Path(parsed.target).expanduser()
        self.camera_serial = f"folder:{self.folder.name}"
        self._pacer = Pacer(options.fps)
        self._queue: list[Path] = []
        self._size: tuple[int, int] | None = None
        self._good_this_pass = 0

    def _open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"image folder not found: {self.folder}")
        self._queue = list_images(self.folder)
        if not self._queue:
            raise SourceError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}")

    def _next_path(self) -> Path:
        if not self._queue:
            self.count("passes")
            if not self.options.loop:
                raise EndOfStream
            if self._good_this_pass == 0:
                # Every file failed: looping again would spin on the same broken files.
                raise SourceError(f"no readable image in {self.folder} (stats: {self._bad_summary()})")
            self._good_this_pass = 0
            self._queue = list_images(self.folder)  # re-list: a drop folder may have changed
            if not self._queue:
                raise SourceError(f"image folder {self.folder} is now empty")
        return self._queue.pop(0)

    def _grab(self) -> Frame | None:
        path = self._next_path()
        reason, detail, image = self._read(path)
        if reason:
            self.reject(reason, detail, path=str(path))
            return None
        assert image is not None
        self._good_this_pass += 1
        self._pacer.wait()
        return self.make_frame(image, "RGB8", path=str(path))

    def _read(self, path: Path) -> tuple[str, str, np.ndarray | None]:
        """(reason, detail, None) for a file that cannot be replayed, else ("", "", image)."""
        try:
            if path.stat().st_size == 0:
                self._warn("skipping empty image file %s", path)
                return "empty", f"empty image file {path.name}", None
            image = read_rgb(path, max_pixels=self.options.max_pixels)
        except FileNotFoundError:
            self._warn("image file vanished before it was read: %s", path)
            return "missing", f"image file vanished before it was read: {path.name}", None
        except DataError as exc:
            # imageio names the reason in its message; 'too large' is the pixel limit.
            reason = "huge" if "too large" in str(exc) else "missing" if "not found" in str(exc) else "corrupt"
            self._warn("skipping %s image: %s", reason, exc)
            return reason, str(exc), None
        except OSError as exc:  # unreadable (permissions, I/O error): the replay goes on
            self._warn("skipping unreadable image %s: %s", path, exc)
            return "corrupt", f"cannot read {path.name}: {exc.strerror or exc}", None
        h, w = image.shape[:2]  # read_rgb already refused more than max_pixels ('huge' above)
        if self._size is None:
            self._size = (h, w)
        elif (h, w) != self._size:
            self._warn("skipping %s: %dx%d differs from the stream's %dx%d", path, w, h, self._size[1], self._size[0])
            return "odd_size", f"{w}x{h} differs from the stream's {self._size[1]}x{self._size[0]}: {path.name}", None
        return "", "", image

    def _warn(self, msg: str, *args: object) -> None:
        # Under events() the pipeline publishes a record and logs (rate-limited) each reason;
        # a replay that loops over one bad file must not write a warning per pass.
        log.log(logging.DEBUG if self._want_rejects else logging.WARNING, msg, *args)

    def _bad_summary(self) -> str:
        return ", ".join(f"{k}={self._counts[k]}" for k in ("empty", "corrupt", "huge", "odd_size", "missing"))

    def _close(self) -> None:
        self._queue = []
