"""ONNX Runtime backends: one session pinned to exactly one execution provider.

`ort-cpu`, `ort-cuda` and `ort-trt` each name one provider. If that provider is missing from
this onnxruntime build, or the session quietly ended up on another one (ORT does that when
e.g. the CUDA libraries fail to load), we raise BackendUnavailable instead of running slower
on the CPU without saying so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends.base import BackendBase, Outputs, Releaser
from edge_runtime.deps import require
from edge_runtime.errors import BackendUnavailable, BundleError, ConfigError, first_line

log = logging.getLogger(__name__)

PROVIDERS = {
    "ort-cpu": "CPUExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-trt": "TensorrtExecutionProvider",
}
PRECISIONS = ("fp32", "fp16", "int8")
_TRT_EP = "TensorrtExecutionProvider"


def _ort():
    return require("onnxruntime", extra="edge", purpose="the ONNX Runtime backends")


def provider_available(provider: str) -> bool:
    """Whether this onnxruntime build offers `provider` (e.g. 'CUDAExecutionProvider').

    Raises:
        MissingDependency: onnxruntime is not installed.
    """
    return provider in _ort().get_available_providers()


def provider_report(name: str) -> tuple[bool, str]:
    """Whether backend `name`'s provider is in this onnxruntime build, and a line for doctor.

    Args:
        name: 'ort-cpu', 'ort-cuda' or 'ort-trt'.

    Returns:
        (available, detail); never raises.
    """
    try:
        ort = _ort()
    except Exception as exc:
        return False, f"onnxruntime not importable ({first_line(exc)})"
    ok = PROVIDERS[name] in ort.get_available_providers()
    return ok, f"{PROVIDERS[name]} {'available' if ok else 'not in this build'} (onnxruntime {ort.__version__})"


@dataclass(frozen=True)
class OrtOptions:
    """Constructor options of the ONNX Runtime backends (the registry rows' options type).

    Attributes:
        intra_op_threads: ORT intra-op threads; 0 = ORT's default (one per core).
        allow_spinning: False stops idle intra-op threads spinning between runs (frees cores).
        provider_options: passed to the provider as given (e.g. `trt_max_workspace_size`).
        trt_cache_dir: engine cache folder for `ort-trt`.
    """

    intra_op_threads: int = 0
    allow_spinning: bool = True
    provider_options: Mapping[str, Any] = field(default_factory=dict)
    trt_cache_dir: str | Path | None = None


@dataclass
class _Session:
    """What one load() made: the session and the constant feeds (text, few-shot bank)."""

    session: Any
    feeds: dict[str, np.ndarray]
    model_path: Path
    precision: str

    def drop(self) -> None:
        """Let the session go."""
        # ORT frees the session's native memory when the last reference goes.
        self.session = None
        self.feeds = {}


class OrtBackend(BackendBase):
    """One InferenceSession on one provider; `text_embeddings` fed from the bundle, allocated once.

    Args:
        name: 'ort-cpu', 'ort-cuda' or 'ort-trt'.
        intra_op_threads, allow_spinning, provider_options, trt_cache_dir: see `OrtOptions`.

    Raises:
        BackendUnavailable: unknown name or a negative thread count.
    """

    def __init__(
        self,
        name: str = "ort-cpu",
        *,
        intra_op_threads: int = 0,
        allow_spinning: bool = True,
        provider_options: Mapping[str, Any] | None = None,
        trt_cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        if name not in PROVIDERS:
            raise BackendUnavailable(f"unknown ONNX Runtime backend '{name}' (known: {', '.join(PROVIDERS)})")
        if intra_op_threads < 0:
            raise BackendUnavailable(f"{name}: intra_op_threads must be >= 0 (0 = ORT default), got {intra_op_threads}")
        self.name = name
        self.provider = PROVIDERS[name]
        self.intra_op_threads = int(intra_op_threads)
        self.allow_spinning = bool(allow_spinning)
        self.provider_options = dict(provider_options or {})
        self.trt_cache_dir = Path(trt_cache_dir) if trt_cache_dir else None
        self._run: _Session | None = None

    @classmethod
    def create(cls, name: str, **options: Any) -> OrtBackend:
        """The backend for registry row `name`, refusing a provider this build lacks.

        Args:
            name: 'ort-cpu', 'ort-cuda' or 'ort-trt'.
            **options: fields of `OrtOptions`.

        Raises:
            ConfigError: an option `OrtOptions` does not have.
            BackendUnavailable: the provider is not in this onnxruntime build (never substituted).
        """
        unknown = sorted(set(options) - set(OrtOptions.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"backend {name}: unknown option(s) {', '.join(unknown)} (known: {', '.join(OrtOptions.__dataclass_fields__)})"
            )
        _check_provider(name, PROVIDERS[name])
        return cls(name, **options)

    @property
    def precision(self) -> str | None:
        """The loaded precision (None before load)."""
        return self._run.precision if self._run else None

    # -- load -----------------------------------------------------------------------------
    def _load_impl(self, bundle: Any, precision: str, releaser: Releaser) -> None:
        ort = _ort()
        _check_provider(self.name, self.provider)
        if precision not in PRECISIONS:
            raise BackendUnavailable(f"{self.name}: unknown precision '{precision}' (known: {', '.join(PRECISIONS)})")
        model_path, options = self._model_and_options(bundle, precision)
        session = self._open_session(ort, model_path, options)
        feeds = _constant_feeds(bundle, session, model_path)
        self._run = _Session(session, feeds, Path(model_path), precision)
        releaser.push(self._run.drop)
        log.info(
            "backend %s: provider %s, precision %s, model %s, intra-op threads %s",
            self.name,
            session.get_providers()[0],
            precision,
            Path(model_path).name,
            self.intra_op_threads or "default",
        )

    def _model_and_options(self, bundle: Any, precision: str) -> tuple[Path, dict[str, Any]]:
        """The ONNX file for `precision` and the provider options that run it."""
        options = dict(self.provider_options)
        if precision == "fp16" and self.provider == _TRT_EP:
            # fp16 on TensorRT is a build flag over the fp32 graph.
            model_path = bundle.model_path("fp32")
            options["trt_fp16_enable"] = True
        elif precision == "fp16":
            try:  # CPU/CUDA EPs need an fp16 ONNX variant, which bundles rarely carry
                model_path = bundle.model_path("fp16")
            except BundleError:
                raise BackendUnavailable(
                    f"{self.name} cannot run fp16 without an fp16 ONNX variant in the bundle (only ort-trt via "
                    "trt_fp16_enable, or the trt backend); use fp32 or int8"
                ) from None
        else:
            model_path = bundle.model_path(precision)
            if precision == "int8" and self.provider == _TRT_EP:
                options.setdefault("trt_int8_enable", True)
        if self.provider == _TRT_EP and self.trt_cache_dir:
            options.setdefault("trt_engine_cache_enable", True)
            options.setdefault("trt_engine_cache_path", str(self.trt_cache_dir))
        if not Path(model_path).is_file():
            raise BundleError(f"model file missing: {model_path}")
        return Path(model_path), options

    def _open_session(self, ort: Any, model_path: Path, options: dict[str, Any]) -> Any:
        """An InferenceSession on exactly this backend's provider, or BackendUnavailable."""
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.intra_op_threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if not self.allow_spinning:
            # Spinning intra-op threads burn the cores that capture/publish need between runs.
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(model_path), sess_options=so, providers=[(self.provider, options)])
        except Exception as exc:
            raise BackendUnavailable(
                f"{self.name}: cannot create an ONNX Runtime session for {model_path}: {first_line(exc)}"
            ) from None
        got = session.get_providers()
        if not got or got[0] != self.provider:
            raise BackendUnavailable(
                f"backend {self.name} asked for {self.provider} but ONNX Runtime ran on {', '.join(got) or 'nothing'}; "
                "refusing to fall back (check the CUDA/TensorRT libraries)"
            )
        return session

    # -- run ------------------------------------------------------------------------------
    def _infer_impl(self, batch: np.ndarray) -> Outputs:
        run = self._run
        feeds = dict(run.feeds)
        feeds["image"] = batch
        score, amap = run.session.run(["score", "anomaly_map"], feeds)
        return Outputs(score=np.asarray(score, np.float32).reshape(-1), anomaly_map=np.asarray(amap, np.float32))

    def _patch_features_impl(self, batch: np.ndarray) -> np.ndarray:
        run = self._run
        if "memory_bank" not in run.feeds:
            raise BundleError(
                f"{run.model_path}: graph has no memory_bank input / patch_features output (export with --bank-shots K)"
            )
        feeds = dict(run.feeds)
        feeds["image"] = batch
        return np.asarray(run.session.run(["patch_features"], feeds)[0], np.float32)

    def _set_memory_bank_impl(self, bank: np.ndarray) -> None:
        run = self._run
        current = run.feeds.get("memory_bank")
        if current is None:
            raise BundleError(f"{run.model_path}: graph has no memory_bank input")
        if bank.shape != current.shape:
            raise BundleError(
                f"memory bank shape {list(bank.shape)} does not fit the graph's input {list(current.shape)}"
            )
        run.feeds = {**run.feeds, "memory_bank": np.ascontiguousarray(bank, np.float32)}

    def _describe_impl(self) -> Mapping[str, Any]:
        ort = _ort()
        run = self._run
        session = run.session if run else None
        return {
            "backend": self.name,
            "provider": session.get_providers()[0] if session else self.provider,
            "providers": list(session.get_providers()) if session else [],
            "precision": run.precision if run else None,
            "model_file": run.model_path.name if run else None,
            # Read back from the session: what ORT actually uses, not what we asked for.
            "intra_op_threads": session.get_session_options().intra_op_num_threads
            if session
            else self.intra_op_threads,
            "onnxruntime": ort.__version__,
            "device": ort.get_device(),
        }

    def _close_impl(self) -> None:
        self._run = None


def _check_provider(name: str, provider: str) -> None:
    available = _ort().get_available_providers()
    if provider not in available:
        raise BackendUnavailable(
            f"backend {name} ({provider}) is not available; available providers: {', '.join(available)}"
        )


def _constant_feeds(bundle: Any, session: Any, model_path: Path) -> dict[str, np.ndarray]:
    """The inputs fed unchanged on every run, after checking the graph has the contract's I/O."""
    input_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]
    if "image" not in input_names:
        raise BundleError(f"{model_path}: graph has no 'image' input (inputs: {', '.join(input_names)})")
    for name in ("score", "anomaly_map"):
        if name not in output_names:
            raise BundleError(f"{model_path}: graph has no '{name}' output (outputs: {', '.join(output_names)})")
    feeds: dict[str, np.ndarray] = {}
    if "text_embeddings" in input_names:
        text = bundle.text_embeddings()
        if text is None:
            raise BundleError(
                f"{bundle.root}: the graph has a text_embeddings input but the manifest says the embeddings are baked"
            )
        feeds["text_embeddings"] = np.ascontiguousarray(text, dtype=np.float32)
    if "memory_bank" in input_names:
        bank = bundle.memory_bank()
        if bank is None:
            raise BundleError(
                f"{bundle.root}: the graph has a memory_bank input but the manifest has no 'fewshot' record"
            )
        feeds["memory_bank"] = bank  # zeros until a station enrols: the zero-shot result
    return feeds
