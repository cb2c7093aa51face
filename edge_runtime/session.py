"""Wiring a RuntimeConfig into a running Pipeline (shared by `run` and the end-to-end bench).

`RuntimeSession` loads the bundle, makes and loads the backend (logging what actually runs),
opens the source and the publisher, and closes all of them in reverse order, also on error.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge_runtime.backends import make_backend
from edge_runtime.bundle import Bundle, load_bundle
from edge_runtime.errors import ConfigError
from edge_runtime.pipeline import Pipeline, PipelineResult, make_preprocessor
from edge_runtime.postprocess import Postprocessor
from edge_runtime.runtime_config import RuntimeConfig
from edge_runtime.stats import LatencyRecorder

if TYPE_CHECKING:  # the seams, by their Protocols
    from edge_runtime.backends.base import Backend
    from edge_runtime.frames import FrameSource
    from edge_runtime.publish.base import Publisher

log = logging.getLogger(__name__)


def load_backend(bundle: Bundle, name: str, precision: str, **options: Any) -> tuple[Backend, dict[str, Any]]:
    """Make the backend `name`, load the bundle at `precision` and log what actually runs.

    Args:
        bundle: the loaded bundle.
        name: a backend name from the backend table (ort-cpu, trt, ...).
        precision: fp32, fp16 or int8.
        **options: the backend's own options.

    Returns:
        The loaded backend (the caller closes it) and its `describe()` info.

    Raises:
        ConfigError / MissingDependency / BackendUnavailable: unknown name, missing runtime, or
            the bundle cannot be loaded at that precision (one line).
    """
    backend = make_backend(name, **options)
    backend.load(bundle, precision)
    info = dict(backend.describe())
    log.info(
        "backend %s ran with provider %s, precision %s",
        info.get("backend", name),
        info.get("provider", info.get("device", "?")),
        info.get("precision", precision),
    )
    return backend, info


@dataclass
class RuntimeSession:
    """Everything one run needs, opened by `open_session` (which also closes it).

    Attributes:
        config: the runtime config.
        bundle: the loaded (verified) bundle.
        backend: the loaded backend.
        backend_info: what the backend reports it runs (provider, precision, ...).
        source: the opened frame source.
        publisher: the opened publisher.
        postprocessor: score -> verdict record for this bundle and backend.
        extra: room for callers (the bench keeps its own state here).
    """

    config: RuntimeConfig
    bundle: Bundle
    backend: Backend
    backend_info: dict[str, Any]
    source: FrameSource
    publisher: Publisher
    postprocessor: Postprocessor
    extra: dict[str, Any] = field(default_factory=dict)

    def pipeline(
        self,
        *,
        max_frames: int | None = None,
        duration_s: float | None = None,
        recorder: LatencyRecorder | None = None,
        on_frame: Callable[[int], None] | None = None,
    ) -> Pipeline:
        """A Pipeline over this session's parts (see `Pipeline` for the arguments).

        Returns:
            The pipeline, not yet running.

        Raises:
            ConfigError: bad limits, or a preprocessing ROI the bundle cannot take.
        """
        return Pipeline(
            self.source,
            self.backend,
            self.postprocessor,
            self.publisher,
            make_preprocessor(self.bundle, self.config.preprocess.roi_obj()),
            self.config.pipeline,
            max_frames=max_frames,
            duration_s=duration_s,
            recorder=recorder,
            on_frame=on_frame,
            station=self.config.station,
        )


def load_configured_bundle(cfg: RuntimeConfig) -> Bundle:
    """The bundle `cfg` names, hashes checked as `bundle.verify` says and its signature
    against the configured (or provisioned) trusted keys.

    Raises:
        ConfigError: no bundle given.
        BundleError: missing, tampered with, unsigned or untrusted (one line).
    """
    if cfg.bundle.path is None:
        raise ConfigError("no bundle given (--bundle or bundle.path)")
    from edge_runtime.signing import resolve_trusted_keys

    return load_bundle(
        cfg.bundle.path, verify=cfg.bundle.verify, trusted_keys=resolve_trusted_keys(None, cfg.bundle.trusted_keys)
    )


@contextlib.contextmanager
def open_session(
    cfg: RuntimeConfig,
    *,
    bundle: Bundle | None = None,
    backend: Backend | None = None,
    backend_info: dict[str, Any] | None = None,
) -> Iterator[RuntimeSession]:
    """Everything a pipeline needs, opened; closed in reverse order on exit.

    The source is built (not opened) before the model loads, so a bad URI is reported at once.

    Args:
        cfg: the runtime config.
        bundle: the bundle `cfg` names, already loaded by `load_configured_bundle` (the bench
            opens one session per round: its files are hashed once, not per round).
        backend: a pre-loaded backend (the bench reuses one across model-only and
            end-to-end runs); it is not closed here. None: load `cfg.backend`.
        backend_info: its `describe()` info, when already known.

    Yields:
        The opened session.

    Raises:
        ConfigError: no bundle or no source given, or a bad setting.
        SourceError / PublishError / BundleError / MissingDependency: a part cannot be
            opened (one line).
    """
    if cfg.bundle.path is None:
        raise ConfigError("no bundle given (--bundle or bundle.path)")
    if not cfg.source.uri:
        raise ConfigError("no frame source given (--source or source.uri)")
    if bundle is None:
        bundle = load_configured_bundle(cfg)
    from edge_runtime.publish import open_publisher
    from edge_runtime.sources import make_source

    # Build (not open) the source first: a bad URI or option is reported before the model
    # spends seconds loading.
    source = make_source(cfg.source.uri, cfg.source.options)
    with contextlib.ExitStack() as stack:
        if backend is None:
            backend, backend_info = load_backend(
                bundle, cfg.backend.name, cfg.backend.precision, **cfg.backend.options()
            )
            stack.callback(backend.close)
        info = dict(backend_info or backend.describe())
        post = Postprocessor(bundle, info, threshold=cfg.threshold, heatmaps=cfg.heatmaps, roi=cfg.preprocess.roi_obj())
        publisher = open_publisher(cfg.publish.uri, cfg.publish.options)
        stack.callback(publisher.close)
        stack.callback(source.close)  # idempotent, also safe if open() fails half-way
        source.open()
        log.info(
            "source %s -> %s, threshold %.4f (%s)",
            cfg.source.uri,
            cfg.publish.uri,
            post.threshold,
            post.threshold_source,
        )
        yield RuntimeSession(cfg, bundle, backend, info, source, publisher, post)


@contextlib.contextmanager
def stop_on_signals(pipeline: Pipeline) -> Iterator[None]:
    """SIGINT/SIGTERM -> pipeline.stop() (drain, flush, exit 0) while the block runs.

    Only the main thread may install handlers; elsewhere this does nothing and the embedding
    program decides. The previous handlers are put back on exit.

    Args:
        pipeline: the pipeline to stop.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if pipeline.stopping:
            log.warning("%s again: still draining, please wait", name)
            return
        log.info("%s: stopping capture, draining queues, flushing publisher", name)
        pipeline.stop(name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_pipeline(session: RuntimeSession, **kwargs: Any) -> PipelineResult:
    """Run the session's pipeline under signal handling and the systemd watchdog.

    Args:
        session: the opened session.
        **kwargs: max_frames, duration_s, recorder, on_frame (see `Pipeline`).

    Returns:
        The pipeline's result.

    Raises:
        Whatever the pipeline raised (see `Pipeline.run`).
    """
    from edge_runtime.sdnotify import systemd_watchdog

    pipeline = session.pipeline(**kwargs)
    armed = session.config.source.options.trigger != "off"  # READY before the first part arrives
    with stop_on_signals(pipeline), systemd_watchdog(pipeline, armed=armed):
        return pipeline.run()
