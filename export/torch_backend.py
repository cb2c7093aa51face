"""The torch reference backend: the merged model itself, fed exactly like the device.

It is the "training side" of every parity check: uint8 RGB -> edge_runtime.preprocess.normalize
(the numpy reference of the in-graph step) -> AnomalyCLIP forward, with text embeddings
computed from the merged text tower (not read from the bundle's .npy, so a wrong .npy shows
up as a parity failure). Registered under the `clipinspect.backends` entry point as 'torch'.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends.base import BackendBase, Outputs, Releaser
from edge_runtime.bundle import Bundle, load_bundle
from edge_runtime.deps import require
from edge_runtime.errors import BackendUnavailable, BundleError, DataError

log = logging.getLogger(__name__)

MERGED_KEY = "merged_model"  # manifest.extra key written by the exporter


class TorchBackend(BackendBase):
    """The merged model in torch eager mode, behind the Backend seam.

    Args:
        merged: merged-model folder (default: the one named in the bundle manifest).
        device: 'cpu' or 'cuda[:i]'; nothing is moved to another device behind your back.
        threads: torch intra-op threads (None: torch's default).
    """

    name = "torch"

    def __init__(self, merged: str | Path | None = None, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__()
        self.merged = Path(merged) if merged is not None else None
        self.device_name = device
        self.threads = threads
        self._model: Any = None
        self._text: Any = None
        self._bank: Any = None
        self._info: Any = None
        self._precision = ""
        self._layout = "NHWC_uint8"
        self._mean: tuple[float, ...] = ()
        self._std: tuple[float, ...] = ()
        self._size: tuple[int, int] = (0, 0)

    def _load_impl(self, bundle: Bundle | str | Path, precision: str, releaser: Releaser) -> None:
        torch = require("torch", extra="train", purpose="the torch reference backend")
        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle)
        device = self._device(torch, precision)
        merged = self._merged_path(bundle)
        from train.merged import load_merged

        if self.threads:
            torch.set_num_threads(self.threads)
        model, info = load_merged(merged)
        model = model.to(device=device, dtype=torch.float16 if precision == "fp16" else torch.float32).eval()
        pre = bundle.manifest.preprocess
        if tuple(info.image_size) != tuple(pre.image_size):
            raise BundleError(
                f"merged model {merged} expects {tuple(info.image_size)} images but bundle {bundle.root} says {tuple(pre.image_size)}"
            )
        if str(info.model_id) != bundle.manifest.model_id:
            # Allowed (comparing another model against a bundle is how a parity check is
            # shown to fail), but never quietly.
            log.warning(
                "torch backend: merged model %s is %s, the bundle was exported from %s",
                merged,
                info.model_id,
                bundle.manifest.model_id,
            )
        with torch.no_grad():
            text = model.text_embeddings()
        self._model, self._info, self._text = model, info, text
        bank = bundle.memory_bank()  # None: no few-shot input; zeros: not enrolled (zero-shot)
        self._bank = None if bank is None else torch.from_numpy(bank).to(device, text.dtype)
        self._device_obj, self._precision = device, precision
        self._layout, self._mean, self._std, self._size = (
            pre.input_layout,
            tuple(pre.mean),
            tuple(pre.std),
            tuple(pre.image_size),
        )
        self._frame = None
        if pre.input_layout == "frame_uint8":
            # The same module the graph was exported with (and training runs): raw frames in.
            from train.frame_module import FramePreprocess

            self._frame = FramePreprocess(
                pre.input_format,
                pre.input_size,
                pre.image_size,
                pre.mean,
                pre.std,
                roi=pre.roi,
                color_order=pre.color_order,
            ).to(device)
        self._merged_loaded = merged
        log.info("torch backend: %s on %s (%s)", merged, device, precision)

    def _device(self, torch: Any, precision: str) -> Any:
        dev = torch.device(self.device_name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(
                f"torch backend: device {self.device_name} requested but torch {torch.__version__} sees no CUDA GPU"
            )
        if dev.type not in ("cpu", "cuda"):
            raise BackendUnavailable(f"torch backend: unsupported device {self.device_name!r} (use cpu or cuda)")
        if precision == "fp32":
            return dev
        if precision == "fp16":
            if dev.type != "cuda":
                raise BackendUnavailable(
                    "torch backend: fp16 needs a CUDA device (pass device='cuda'); on CPU only fp32 runs"
                )
            return dev
        raise BackendUnavailable(
            f"torch backend: precision {precision!r} is not supported (fp32 on CPU/CUDA, fp16 on CUDA)"
        )

    def _merged_path(self, bundle: Bundle) -> Path:
        if self.merged is not None:
            path = self.merged
        else:
            named = bundle.manifest.extra.get(MERGED_KEY)
            if not named:
                raise BackendUnavailable(
                    f"torch backend: bundle {bundle.root} names no merged model (manifest extra.{MERGED_KEY}); pass the merged folder explicitly"
                )
            path = Path(str(named))
        if not path.is_dir():
            raise BackendUnavailable(f"torch backend: merged model folder not found: {path}")
        return path

    def _infer_impl(self, batch: np.ndarray) -> Outputs:
        import torch

        with torch.no_grad():
            out = self._model(self._model_input(batch), self._text, self._bank)
        return Outputs(
            score=out.score.detach().to("cpu", torch.float32).numpy(),
            anomaly_map=out.anomaly_map.detach().to("cpu", torch.float32).numpy(),
        )

    def _patch_features_impl(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            feats, _ = self._model.patch_features(self._model_input(batch))
        return feats.detach().to("cpu", torch.float32).numpy()

    def _set_memory_bank_impl(self, bank: np.ndarray) -> None:
        if self._bank is None:
            raise BundleError("torch backend: the bundle has no memory_bank input (export with --bank-shots K)")
        if tuple(bank.shape) != tuple(self._bank.shape):
            raise BundleError(
                f"memory bank shape {list(bank.shape)} does not fit the graph's input {list(self._bank.shape)}"
            )
        import torch

        self._bank = torch.from_numpy(np.ascontiguousarray(bank, np.float32)).to(self._bank.device, self._bank.dtype)

    def _model_input(self, batch: np.ndarray) -> Any:
        """The model's float NCHW input: raw frames through the bundle's frame module, else
        the numpy preprocessing of the device (`pixel_values`)."""
        import torch

        if self._frame is not None:
            return self._frame(self._check_frames(batch).to(self._device_obj)).to(self._text.dtype)
        return torch.from_numpy(self.pixel_values(batch)).to(self._device_obj, self._text.dtype)

    def _check_frames(self, batch: np.ndarray) -> Any:
        import torch

        want = self._frame.frame_shape
        if batch.dtype != np.uint8 or batch.shape[1:] != want:
            raise DataError(
                f"torch backend: expected uint8 frames [N,{','.join(map(str, want))}], got {batch.dtype} {list(batch.shape)}"
            )
        return torch.from_numpy(np.ascontiguousarray(batch))

    def pixel_values(self, batch: np.ndarray) -> np.ndarray:
        """What the model's forward gets for `batch` (in the bundle's input layout)."""
        from edge_runtime.preprocess import normalize

        h, w = self._size
        if self._layout == "NHWC_uint8":
            if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (h, w, 3):
                raise DataError(f"torch backend: expected uint8 [N,{h},{w},3], got {batch.dtype} {list(batch.shape)}")
            return normalize(batch, self._mean, self._std)
        if batch.dtype != np.float32 or batch.ndim != 4 or batch.shape[1:] != (3, h, w):
            raise DataError(f"torch backend: expected float32 [N,3,{h},{w}], got {batch.dtype} {list(batch.shape)}")
        return np.ascontiguousarray(batch)

    def text_embeddings(self) -> np.ndarray:
        """The [2, D] embeddings this backend computed from the merged text tower."""
        import torch

        self.require_loaded("text_embeddings()")
        return self._text.detach().to("cpu", torch.float32).numpy()

    def _describe_impl(self) -> Mapping[str, Any]:
        import torch

        return {
            "backend": self.name,
            "provider": "torch eager",
            "precision": self._precision,
            "device": str(getattr(self, "_device_obj", self.device_name)),
            "threads": torch.get_num_threads(),
            "merged_model": str(getattr(self, "_merged_loaded", self.merged)),
            "versions": {"torch": torch.__version__},
        }

    def _close_impl(self) -> None:
        self._model = None
        self._text = None
        self._bank = None
