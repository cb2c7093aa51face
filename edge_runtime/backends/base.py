"""The Backend seam: one small runner interface for every inference engine.

`Backend` is the Protocol the pipeline, session, enrol and parity code are typed by.
`BackendBase` is the base the built-in backends share (Polygraphy's runner shape): its public
`load()/infer()/describe()/close()` check the life cycle once, and a subclass fills in
`_load_impl/_infer_impl/_describe_impl/_close_impl`.

Life cycle: new -> load() -> loaded -> close() -> closed (load() may open it again).
infer() before load() or after close() is a one-line `BackendNotLoaded`; load() on a loaded
backend is `BackendUnavailable` (close() first); close() is idempotent and never raises.
What must be freed outside Python (CUDA buffers, a retained CUDA context, an ONNX Runtime
session's native memory) is registered during `_load_impl` with `Releaser.push`; a
`weakref.finalize` runs those callbacks on close() or when a backend that was never closed is
garbage collected, so no backend needs `__del__`.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edge_runtime.errors import BackendUnavailable, BundleError, ConfigError, first_line

log = logging.getLogger(__name__)

__all__ = ["Backend", "BackendBase", "BackendNotLoaded", "Outputs", "Releaser"]


@dataclass(frozen=True)
class Outputs:
    """Model outputs for a batch, as defined in the bundle manifest.

    Attributes:
        score: [N] image anomaly score, higher = more anomalous.
        anomaly_map: [N, h, w] anomaly map on the patch grid.
    """

    score: np.ndarray
    anomaly_map: np.ndarray


@runtime_checkable
class Backend(Protocol):
    """What the runtime needs from an inference engine (the seam's type)."""

    name: str  # e.g. 'ort-cpu', 'trt'

    def load(self, bundle: Any, precision: str) -> None:
        """Load the bundle's model for `precision` ('fp32', 'fp16', 'int8') or raise
        BackendUnavailable; never substitute another provider or precision."""

    def infer(self, batch: np.ndarray) -> Outputs:
        """`batch` is what the bundle's `image` input wants (uint8 NHWC RGB by default)."""

    def describe(self) -> Mapping[str, Any]:
        """What actually ran: backend, provider(s), precision, device, versions."""

    def close(self) -> None:
        """Free what load() took; idempotent."""


class BackendNotLoaded(BackendUnavailable):
    """A backend was used before load() or after close() (a programming error, one line)."""


class Releaser:
    """The release callbacks of one load(), run last-in first-out, each at most once.

    A failing callback is logged and the rest still run: teardown never raises. Callbacks
    must not be bound methods of the backend itself (the finalizer would then keep the
    backend alive and never run); pass the resources as arguments instead.
    """

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._callbacks: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def push(self, fn: Callable[..., Any], *args: Any) -> None:
        """Register `fn(*args)` to run on release (after the callbacks pushed later).

        Raises:
            TypeError: `fn` is a bound method of a backend (it would keep the backend alive).
        """
        if inspect.ismethod(fn) and isinstance(fn.__self__, BackendBase):
            raise TypeError(f"{self._owner}: release callbacks must not hold the backend ({fn.__qualname__})")
        self._callbacks.append((fn, args))

    def __call__(self) -> None:
        while self._callbacks:
            fn, args = self._callbacks.pop()
            try:
                fn(*args)
            except Exception as exc:
                log.warning(
                    "%s: releasing %s failed: %s",
                    self._owner,
                    getattr(fn, "__qualname__", fn),
                    first_line(exc, with_type=True),
                )


_NEW, _LOADED, _CLOSED = "new", "loaded", "closed"


class BackendBase:
    """Owns the life cycle; subclasses implement the `_*_impl` hooks.

    Subclasses set `name` (per instance or class) and implement:
        `_load_impl(bundle, precision, releaser)`: load; push what must be freed onto
            `releaser`. If it raises, what it pushed so far is released.
        `_infer_impl(batch) -> Outputs`: run one batch (only called when loaded).
        `_describe_impl() -> Mapping`: what ran (or, before load, what would run).
        `_close_impl()`: drop Python references to loaded state (optional).
        `_patch_features_impl(batch)` and `_set_memory_bank_impl(bank)`: the few-shot path
            (optional; without them the public methods raise a one-line BundleError).

    Use as a context manager to close on exit: `with make_backend("ort-cpu") as b: ...`.
    """

    name: str = ""

    def __init__(self) -> None:
        self._state = _NEW
        self._finalizer: weakref.finalize | None = None

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, **options: Any) -> BackendBase:
        """A not-yet-loaded backend for registry row `name` (what `make_backend` calls).

        Args:
            name: the registry name the backend was picked by.
            **options: constructor options; this default takes none.

        Returns:
            The new backend.

        Raises:
            ConfigError: options were given to a backend that takes none.
        """
        if options:
            raise ConfigError(f"backend {name} takes no options (got {', '.join(sorted(options))})")
        return cls()

    # -- life cycle -------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        """True between a successful load() and close()."""
        return self._state == _LOADED

    def load(self, bundle: Any, precision: str = "fp32") -> None:
        """Load the bundle's model for `precision`.

        Args:
            bundle: a loaded `Bundle` (some backends also take its folder).
            precision: 'fp32', 'fp16' or 'int8'.

        Raises:
            BackendUnavailable: already loaded, or this backend/precision cannot run here.
            BundleError: the bundle lacks what the backend needs.
        """
        if self._state == _LOADED:
            raise BackendUnavailable(f"{self.name}: load() on a loaded backend; close() it first")
        releaser = Releaser(self.name or type(self).__name__)
        finalizer = weakref.finalize(self, releaser)
        try:
            self._load_impl(bundle, precision, releaser)
        except BaseException:
            finalizer()  # free what was taken before the failure
            self._safe_close_impl()
            raise
        self._finalizer = finalizer
        self._state = _LOADED

    def require_loaded(self, what: str = "infer()") -> None:
        """Raise BackendNotLoaded unless loaded (for subclass methods beyond `infer`).

        Raises:
            BackendNotLoaded: before load() or after close().
        """
        if self._state != _LOADED:
            when = "after close()" if self._state == _CLOSED else "before load()"
            raise BackendNotLoaded(f"{self.name}: {what} {when}")

    def infer(self, batch: np.ndarray) -> Outputs:
        """Run one batch.

        Args:
            batch: what the bundle's `image` input wants (uint8 NHWC RGB by default).

        Returns:
            The batch's scores and anomaly maps.

        Raises:
            BackendNotLoaded: before load() or after close().
        """
        if self._state != _LOADED:
            self.require_loaded()
        return self._infer_impl(batch)

    def patch_features(self, batch: np.ndarray) -> np.ndarray:
        """The model's `patch_features` output for `batch` (few-shot enrolment).

        Args:
            batch: as for infer().

        Returns:
            [N, L, P, D] float32 patch features.

        Raises:
            BackendNotLoaded: before load() or after close().
            BundleError: the loaded model has no few-shot path.
        """
        self.require_loaded("patch_features()")
        return self._patch_features_impl(batch)

    def set_memory_bank(self, bank: np.ndarray) -> None:
        """Use another few-shot bank from the next infer() on, without reloading (enrolment
        scores the remaining good images with the new bank before writing the bundle).

        Args:
            bank: [L, M, D] float32, the model's `memory_bank` input shape.

        Raises:
            BackendNotLoaded: before load() or after close().
            BundleError: the model has no memory_bank input, or it has another shape.
        """
        self.require_loaded("set_memory_bank()")
        self._set_memory_bank_impl(bank)

    def describe(self) -> Mapping[str, Any]:
        """What ran (after load) or would run (before): backend, provider, precision, versions.

        Returns:
            A new dict; callers may keep it.
        """
        return dict(self._describe_impl())

    def close(self) -> None:
        """Free what load() took. Idempotent; never raises (failures are logged)."""
        finalizer, self._finalizer = self._finalizer, None
        if self._state == _LOADED:
            self._state = _CLOSED
        self._safe_close_impl()
        if finalizer is not None:
            finalizer()

    def __enter__(self) -> BackendBase:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _safe_close_impl(self) -> None:
        try:
            self._close_impl()
        except Exception as exc:
            log.warning("%s: close failed: %s", self.name, first_line(exc, with_type=True))

    # -- hooks ------------------------------------------------------------------------------
    def _load_impl(self, bundle: Any, precision: str, releaser: Releaser) -> None:
        raise NotImplementedError

    def _infer_impl(self, batch: np.ndarray) -> Outputs:
        raise NotImplementedError

    def _describe_impl(self) -> Mapping[str, Any]:
        return {"backend": self.name}

    def _patch_features_impl(self, batch: np.ndarray) -> np.ndarray:
        raise BundleError(f"backend {self.name!r} cannot return patch features; use ort-cpu, ort-cuda, trt or torch")

    def _set_memory_bank_impl(self, bank: np.ndarray) -> None:
        raise BundleError(f"backend {self.name!r} cannot switch memory banks; use ort-cpu, ort-cuda, trt or torch")

    def _close_impl(self) -> None:
        """Drop references to loaded state (the releaser frees native resources)."""
