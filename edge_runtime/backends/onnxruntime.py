"""ONNX Runtime backends: one session pinned to exactly one execution provider.

`ort-cpu`, `ort-cuda` and `ort-trt` each name one provider. If that provider is missing from
this onnxruntime build, or the session quietly ended up on another one (ORT does that when
e.g. the CUDA libraries fail to load), we raise BackendUnavailable instead of running slower
on the CPU without saying so.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edge_runtime.backends.base import Outputs
from edge_runtime.deps import require
from edge_runtime.errors import BackendUnavailable, BundleError

log = logging.getLogger(__name__)

PROVIDERS = {
    "ort-cpu": "CPUExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-trt": "TensorrtExecutionProvider",
}
PRECISIONS = ("fp32", "fp16", "int8")


def _ort():
    return require("onnxruntime", extra="edge", purpose="the ONNX Runtime backends")


def provider_available(provider: str) -> bool:
    return provider in _ort().get_available_providers()


class OrtBackend:
    """One InferenceSession on one provider; `text_embeddings` fed from the bundle, allocated once."""

    def __init__(
        self,
        name: str = "ort-cpu",
        *,
        intra_op_threads: int = 0,
        allow_spinning: bool = True,
        provider_options: Mapping[str, Any] | None = None,
        trt_cache_dir: str | Path | None = None,
    ) -> None:
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
        self.precision: str | None = None
        self._session = None
        self._feeds: dict[str, np.ndarray] = {}
        self._image_name = "image"
        self._output_names: list[str] = ["score", "anomaly_map"]
        self._model_path: Path | None = None
        self._lock = threading.Lock()

    def load(self, bundle: Any, precision: str = "fp32") -> None:
        ort = _ort()
        available = ort.get_available_providers()
        if self.provider not in available:
            raise BackendUnavailable(f"backend {self.name} ({self.provider}) is not available; available providers: {', '.join(available)}")
        if precision not in PRECISIONS:
            raise BackendUnavailable(f"{self.name}: unknown precision '{precision}' (known: {', '.join(PRECISIONS)})")
        options = dict(self.provider_options)
        if precision == "fp16":
            # fp16 here is a TensorRT build flag over the fp32 graph; CPU/CUDA EPs would need
            # an fp16 ONNX variant, which bundles do not carry.
            if self.provider != "TensorrtExecutionProvider":
                raise BackendUnavailable(f"{self.name} cannot run fp16 (only ort-trt via trt_fp16_enable, or the trt backend); use fp32 or int8")
            model_path = bundle.model_path("fp32")
            options["trt_fp16_enable"] = True
        else:
            model_path = bundle.model_path(precision)
            if precision == "int8" and self.provider == "TensorrtExecutionProvider":
                options.setdefault("trt_int8_enable", True)
        if self.provider == "TensorrtExecutionProvider" and self.trt_cache_dir:
            options.setdefault("trt_engine_cache_enable", True)
            options.setdefault("trt_engine_cache_path", str(self.trt_cache_dir))
        if not Path(model_path).is_file():
            raise BundleError(f"model file missing: {model_path}")

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
        except Exception as exc:  # ORT raises its own Fail/InvalidArgument types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendUnavailable(f"{self.name}: cannot create an ONNX Runtime session for {model_path}: {first}") from None
        got = session.get_providers()
        if not got or got[0] != self.provider:
            raise BackendUnavailable(
                f"backend {self.name} asked for {self.provider} but ONNX Runtime ran on {', '.join(got) or 'nothing'}; "
                "refusing to fall back (check the CUDA/TensorRT libraries)"
            )
        input_names = [i.name for i in session.get_inputs()]
        output_names = [o.name for o in session.get_outputs()]
        feeds: dict[str, np.ndarray] = {}
        if "text_embeddings" in input_names:
            text = bundle.text_embeddings()
            if text is None:
                raise BundleError(f"{bundle.root}: the graph has a text_embeddings input but the manifest says the embeddings are baked")
            feeds["text_embeddings"] = np.ascontiguousarray(text, dtype=np.float32)
        if "memory_bank" in input_names:
            bank = bundle.memory_bank()
            if bank is None:
                raise BundleError(f"{bundle.root}: the graph has a memory_bank input but the manifest has no 'fewshot' record")
            feeds["memory_bank"] = bank  # zeros until a station enrols: the zero-shot result
        if "image" not in input_names:
            raise BundleError(f"{model_path}: graph has no 'image' input (inputs: {', '.join(input_names)})")
        for name in ("score", "anomaly_map"):
            if name not in output_names:
                raise BundleError(f"{model_path}: graph has no '{name}' output (outputs: {', '.join(output_names)})")
        with self._lock:
            self._session = session
            self._feeds = feeds
            self._model_path = Path(model_path)
            self.precision = precision
        log.info(
            "backend %s: provider %s, precision %s, model %s, intra-op threads %s",
            self.name,
            got[0],
            precision,
            Path(model_path).name,
            self.intra_op_threads or "default",
        )

    def infer(self, batch: np.ndarray) -> Outputs:
        session = self._session
        if session is None:
            raise BackendUnavailable(f"{self.name}: infer() before load()")
        feeds = dict(self._feeds)
        feeds[self._image_name] = batch
        score, amap = session.run(self._output_names, feeds)
        return Outputs(score=np.asarray(score, np.float32).reshape(-1), anomaly_map=np.asarray(amap, np.float32))

    def patch_features(self, batch: np.ndarray) -> np.ndarray:
        """The graph's `patch_features` output [N, L, P, D] for `batch` (few-shot enrolment)."""
        session = self._session
        if session is None:
            raise BackendUnavailable(f"{self.name}: patch_features() before load()")
        if "memory_bank" not in self._feeds:
            raise BundleError(f"{self._model_path}: graph has no memory_bank input / patch_features output (export with --bank-shots K)")
        feeds = dict(self._feeds)
        feeds[self._image_name] = batch
        return np.asarray(session.run(["patch_features"], feeds)[0], np.float32)

    def set_memory_bank(self, bank: np.ndarray) -> None:
        """Feed another bank ([L, M, D], the graph's shape) from the next infer() on, without
        reloading: used to compare banks (seeds, K) on one session."""
        current = self._feeds.get("memory_bank")
        if current is None:
            raise BundleError(f"{self._model_path}: graph has no memory_bank input")
        if bank.shape != current.shape:
            raise BundleError(f"memory bank shape {list(bank.shape)} does not fit the graph's input {list(current.shape)}")
        feeds = dict(self._feeds)
        feeds["memory_bank"] = np.ascontiguousarray(bank, np.float32)
        self._feeds = feeds

    def describe(self) -> Mapping[str, Any]:
        ort = _ort()
        return {
            "backend": self.name,
            "provider": self._session.get_providers()[0] if self._session else self.provider,
            "providers": list(self._session.get_providers()) if self._session else [],
            "precision": self.precision,
            "model_file": self._model_path.name if self._model_path else None,
            # Read back from the session: what ORT actually uses, not what we asked for.
            "intra_op_threads": self._session.get_session_options().intra_op_num_threads if self._session else self.intra_op_threads,
            "onnxruntime": ort.__version__,
            "device": ort.get_device(),
        }

    def close(self) -> None:
        with self._lock:
            self._session = None
            self._feeds = {}
