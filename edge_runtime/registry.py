"""One registry shape for every seam: a table from scheme/name to "module:Class".

Sources, publishers and backends each keep one `Registry` (in their package's
`__init__`). A row names the implementation lazily, as text, so that looking a name up,
validating a URI, writing `--help` text or a `doctor` line never imports a vendor SDK,
torch or paho; the class is imported only when the thing is built. Adding an
implementation is one new module plus one `Entry` row.

The class a row names is built with `cls.from_uri(uri, options)` for sources and
publishers and `cls.create(name, **options)` for backends (see each seam's base); the
registry only finds it.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from edge_runtime.errors import ClipInspectError, ConfigError, MissingDependency

__all__ = ["Entry", "Registry", "Availability"]


@dataclass(frozen=True)
class Entry:
    """One row of a seam's table.

    Attributes:
        name: the URI scheme (sources, publishers) or backend name, lower case.
        target: "package.module:Class" of the implementation, imported only on `load`.
        options: "package.module:OptionsType" of the options it takes, or "" for none.
        summary: one line for `--help` and `doctor` (e.g. the URI form it accepts).
        requires: top-level modules it needs at run time (checked without importing).
        aliases: further names that select the same row (e.g. `gst` for `cv`).
    """

    name: str
    target: str
    options: str = ""
    summary: str = ""
    requires: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if ":" not in self.target or self.target.count(":") != 1:
            raise ValueError(f"registry entry {self.name!r}: target {self.target!r} must be 'module:Class'")
        if self.options and self.options.count(":") != 1:
            raise ValueError(f"registry entry {self.name!r}: options {self.options!r} must be 'module:Type'")


@dataclass(frozen=True)
class Availability:
    """Whether a row could run here, found without importing it (for `doctor`)."""

    name: str
    available: bool
    detail: str


def _import_attr(ref: str) -> object:
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"{module_name} has no {attr}") from None


@dataclass
class Registry:
    """The table of one seam.

    Args:
        seam: what the rows are, for messages ("source", "publisher", "backend").
        entries: the rows, in the order `--help` shows them.
        error: the exception raised for an unknown name (one line, exit 2).
        extra: optional callable returning more rows at lookup time (entry points).
    """

    seam: str
    entries: Iterable[Entry]
    error: type[ClipInspectError] = ConfigError
    extra: Callable[[], Iterable[Entry]] | None = None
    _rows: dict[str, Entry] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.entries = tuple(self.entries)
        self._rows = {}
        for entry in self.entries:
            self._add(entry)

    def _add(self, entry: Entry) -> None:
        for key in (entry.name, *entry.aliases):
            if key in self._rows:
                raise ValueError(f"{self.seam} registry: '{key}' registered twice")
            self._rows[key] = entry

    def _all(self) -> dict[str, Entry]:
        if self.extra is None:
            return self._rows
        rows = dict(self._rows)
        for entry in self.extra():
            for key in (entry.name, *entry.aliases):
                rows.setdefault(key, entry)  # built-in rows win over plug-ins
        return rows

    def register(self, entry: Entry) -> None:
        """Add one row (plug-ins and tests; built-in rows live in the table literal)."""
        self._add(entry)
        self.entries = (*self.entries, entry)

    def unregister(self, name: str) -> None:
        """Remove the row `name` (and its aliases); the inverse of `register`."""
        entry = self.entry(name)
        for key in (entry.name, *entry.aliases):
            self._rows.pop(key, None)
        self.entries = tuple(e for e in self.entries if e is not entry)

    @contextmanager
    def added(self, entry: Entry) -> Iterator[Entry]:
        """Register `entry` for the duration of a `with` block (tests, one-off tools)."""
        self.register(entry)
        try:
            yield entry
        finally:
            self.unregister(entry.name)

    def names(self) -> list[str]:
        """The primary names, built-ins first in table order, then plug-ins sorted."""
        own = [e.name for e in self.entries]
        more = sorted({e.name for e in self._all().values()} - set(own))
        return own + more

    def __iter__(self) -> Iterator[Entry]:
        seen: set[str] = set()
        for entry in self._all().values():
            if entry.name not in seen:
                seen.add(entry.name)
                yield entry

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._all()

    def entry(self, name: str) -> Entry:
        """The row for `name` (case-insensitive). Raises `error` naming the known ones."""
        rows = self._all()
        key = name.lower() if isinstance(name, str) else name
        if key not in rows:
            raise self.error(f"unknown {self.seam} '{name}'; use one of {', '.join(self.names())}")
        return rows[key]

    def load(self, name: str) -> type:
        """Import and return the class for `name`.

        Raises:
            `error` for an unknown name; MissingDependency when its module cannot be
            imported (a vendor SDK or optional package is not installed).
        """
        entry = self.entry(name)
        try:
            return _import_attr(entry.target)  # type: ignore[return-value]
        except MissingDependency:
            raise
        except ImportError as exc:
            raise MissingDependency(f"{self.seam} {entry.name} ({entry.target}) cannot be loaded: {exc}") from None

    def options_type(self, name: str) -> type | None:
        """The options type of `name`'s row, or None when it takes none."""
        entry = self.entry(name)
        return _import_attr(entry.options) if entry.options else None  # type: ignore[return-value]

    def availability(self) -> list[Availability]:
        """For each row: are its `requires` importable here? Imports nothing."""
        out = []
        for entry in self:
            missing = [m for m in entry.requires if importlib.util.find_spec(m) is None]
            detail = entry.summary if not missing else f"missing: {', '.join(missing)}"
            out.append(Availability(entry.name, not missing, detail))
        return out

    def help_text(self, indent: str = "  ") -> str:
        """One line per row, `name  summary`, for argparse epilogs and module docs."""
        rows = list(self)
        width = max((len(e.name) for e in rows), default=0)
        return "\n".join(f"{indent}{e.name.ljust(width)}  {e.summary}".rstrip() for e in rows)
