"""Our exception types. The CLI renders any of them as one line and exits with `exit_code`."""

from __future__ import annotations


class ClipInspectError(Exception):
    """Base for errors the user can act on (bad input, missing piece). Exit code 2."""

    exit_code = 2


class ConfigError(ClipInspectError):
    """A config file or override is wrong: unknown key, bad type, value out of range."""


class DataError(ClipInspectError):
    """A data set, image or mask cannot be used; the message names the file."""


class BundleError(ClipInspectError):
    """A bundle is missing, tampered with, from a newer schema, or built for another device."""


class MissingDependency(ClipInspectError):
    """An optional package or vendor SDK is not installed."""


class BackendUnavailable(ClipInspectError):
    """The requested backend/precision/provider cannot run here. Never silently replaced."""


class SourceError(ClipInspectError):
    """A frame source cannot be opened or has failed for good."""


class FrameRejected(ClipInspectError):
    """One frame cannot be judged (undecodable, wrong size/format for the bundle, ...).
    The pipeline turns it into a SKIPPED/ERROR record with `reason` and keeps running."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # short machine-readable code, e.g. "frame_size_mismatch"


class PublishError(ClipInspectError):
    """A publisher cannot be configured or opened."""


class CheckFailed(ClipInspectError):
    """A verification ran and the result is outside tolerance (exit 1, not a usage error)."""

    exit_code = 1


def first_line(exc: BaseException, *, with_type: bool = False, limit: int = 0) -> str:
    """The first line of `exc`'s message (its type name when the message is empty), for the
    one-line errors the CLI and `doctor` print. Vendor SDK errors often span many lines.

    Args:
        exc: the exception to describe.
        with_type: prefix the exception's type name ("ValueError: ...").
        limit: cut the line to this many characters (0: no cut).
    """
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    line = text.splitlines()[0]
    if limit:
        line = line[:limit]
    return f"{type(exc).__name__}: {line}" if with_type else line
