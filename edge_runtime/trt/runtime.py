"""Native TensorRT backend (`trt`): the engine built on this device by build-engine.

Everything that can be done once is done in load(): engine deserialised, execution context
created, page-locked host buffers and device buffers allocated for the largest batch, tensor
addresses bound, text embeddings uploaded. infer() then only copies the batch in, runs on one
CUDA stream (async H2D, execute, async D2H) and synchronises once.

Frame copies (raw-frame bundles, where `image` is the camera's frame: 8.8 MB for 4096x2160
BayerRG8). The pipeline hands the source's buffer to infer() uncopied; infer() makes the one
host copy, into the page-locked staging buffer, and the H2D transfer is DMA. On the Orin
(integrated GPU: CPU and GPU share the same DRAM) even that copy can go:

* Mapped page-locked memory: allocate the input with
  `cuda.pagelocked_empty(shape, np.uint8, mem_flags=cuda.host_alloc_flags.DEVICEMAP)`
  (cudaHostAlloc with cudaHostAllocMapped) and bind `host.base.get_device_pointer()` as the
  tensor address; the engine then reads host memory directly, with no memcpy_htod. On a
  discrete GPU this would read over PCIe on every access; on the Orin it is the same DRAM.
  (cudaMallocManaged unified memory works too, but migrates pages on first GPU touch; mapped
  pinned memory has no page faults, which is what a fixed per-frame budget wants.)
* Let the camera write into those buffers: Spinnaker's user buffers
  (`cam.SetUserBuffers(...)`, buffer ownership 'user') or GenTL `DSAnnounceBuffer` announce
  application-allocated memory to the driver, so the USB3 DMA lands the frame in the mapped
  page-locked buffer and the frame is never copied by the CPU. A ring of such buffers (one
  per in-flight frame, NewestOnly) replaces the single staging buffer; the frame is returned
  to the driver after the engine's stream has synchronised.
Neither path can be exercised without a Jetson (the pycuda stand-in has no DEVICEMAP); the
single staging copy (8.8 MB read + 8.8 MB written per 4K Bayer frame; an estimate of well
under 1 ms at the Orin Nano's 68 GB/s, not measured) is what runs today. See README "Raw-frame bundles".

TensorRT 10 removed the bindings API; 8.5+ has the name-based tensor API used here
(set_tensor_address / set_input_shape / execute_async_v3). Engines from older TensorRT
(JetPack 5.0, 8.4) fall back to bindings + execute_async_v2.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from edge_runtime.backends.base import BackendBase, Outputs, Releaser
from edge_runtime.errors import BackendUnavailable, BundleError, DataError
from edge_runtime.trt import compat

log = logging.getLogger(__name__)

IMAGE, TEXT, SCORE, MAP = "image", "text_embeddings", "score", "anomaly_map"
BANK, FEATURES = "memory_bank", "patch_features"  # few-shot bundles (edge_runtime.fewshot)


class _Tensor:
    """One engine I/O tensor with its buffers (allocated once, for the largest shape)."""

    def __init__(
        self, name: str, is_input: bool, shape: tuple[int, ...], max_shape: tuple[int, ...], dtype: np.dtype, index: int
    ) -> None:
        self.name, self.is_input, self.shape, self.max_shape, self.dtype, self.index = (
            name,
            is_input,
            shape,
            max_shape,
            dtype,
            index,
        )
        self.host: np.ndarray | None = None
        self.device: Any = None


class TrtBackend(BackendBase):
    """The native TensorRT backend: one engine, one execution context, buffers allocated once.

    Args:
        device: CUDA device ordinal.

    Raises:
        BackendUnavailable: unknown options.
    """

    name = "trt"

    def __init__(self, device: int = 0, **options: Any) -> None:
        super().__init__()
        if options:
            raise BackendUnavailable(f"trt backend: unknown option(s) {', '.join(sorted(options))}")
        self._ordinal = device
        self._info: dict[str, Any] = {"backend": self.name}

    # -- load -----------------------------------------------------------------------------
    def _load_impl(self, bundle: Any, precision: str, releaser: Releaser) -> None:
        from edge_runtime.bundle import Bundle, load_bundle

        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle)
        entry = compat.find_engine(bundle, precision)
        trt = compat.import_tensorrt("the 'trt' backend")
        cuda = compat.import_cuda("the 'trt' backend")
        self._trt, self._cuda = trt, cuda
        self._ctx = compat.PrimaryContext(cuda, self._ordinal)
        releaser.push(self._ctx.release)  # runs last: after the buffers are freed
        # The TensorRT objects and the stream live only here (read through the properties below),
        # so the releaser destroys them with the context current, before the context goes.
        self._held: dict[str, Any] = {}
        self._tensors: dict[str, _Tensor] = {}
        releaser.push(_free_gpu, self._ctx, self._tensors, self._held)
        with self._ctx:
            gpu = compat.gpu_info(cuda, self._ordinal)
            version = compat.trt_version(trt)
            compat.check_engine(entry, version, gpu, bundle.root)
            engine = self._deserialize(trt, bundle.path(entry.file), version)
            self._tensor_api = hasattr(engine, "num_io_tensors")
            self._tensors.update(self._describe_tensors(trt, engine))
            self._check_contract(bundle)
            self._held["context"] = engine.create_execution_context()
            self._held["stream"] = cuda.Stream()
            self._allocate(cuda)
            self._upload_text(bundle, cuda)
            self._upload_bank(bundle, cuda)
        self._image_spec = bundle.manifest.input(IMAGE)
        self._n_set = -1
        self._info = {
            "backend": self.name,
            "precision": precision,
            "tensorrt": version,
            "gpu": gpu.name,
            "compute_capability": gpu.compute_capability,
            "engine": str(bundle.path(entry.file)),
            "engine_sha256": bundle.manifest.files[entry.file].sha256,
            "build_flags": list(entry.build_flags),
            "api": "tensor (execute_async_v3)" if self._tensor_api else "bindings (execute_async_v2)",
            "max_batch": self._max_batch,
        }
        log.info("trt backend: %s engine %s, TensorRT %s on %s", precision, entry.file, version, gpu.name)

    def _deserialize(self, trt: Any, path: Any, version: str) -> Any:
        """The engine in `path`, or BundleError with TensorRT's own reason."""
        self._logger = compat.make_logger(trt)
        self._held["runtime"] = runtime = trt.Runtime(self._logger)
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            detail = " | ".join(self._logger.errors) or "see the TensorRT log"
            raise BundleError(
                f"TensorRT {version} cannot load {path}: {detail}; rebuild it with clipinspect build-engine"
            )
        self._held["engine"] = engine
        return engine

    def _describe_tensors(self, trt: Any, engine: Any) -> dict[str, _Tensor]:
        tensors: dict[str, _Tensor] = {}
        if self._tensor_api:
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                shape = tuple(int(d) for d in engine.get_tensor_shape(name))
                max_shape = shape
                if is_input and any(d < 0 for d in shape):
                    max_shape = tuple(int(d) for d in engine.get_tensor_profile_shape(name, 0)[2])
                tensors[name] = _Tensor(
                    name, is_input, shape, max_shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name))), i
                )
        else:
            for i in range(engine.num_bindings):
                name = engine.get_binding_name(i)
                is_input = bool(engine.binding_is_input(i))
                shape = tuple(int(d) for d in engine.get_binding_shape(i))
                max_shape = shape
                if is_input and any(d < 0 for d in shape):
                    max_shape = tuple(int(d) for d in engine.get_profile_shape(0, i)[2])
                tensors[name] = _Tensor(
                    name, is_input, shape, max_shape, np.dtype(trt.nptype(engine.get_binding_dtype(i))), i
                )
        return tensors

    def _check_contract(self, bundle: Any) -> None:
        need = [IMAGE, SCORE, MAP] + ([TEXT] if bundle.text_embeddings() is not None else [])
        need += [BANK, FEATURES] if bundle.manifest.fewshot is not None else []
        missing = [n for n in need if n not in self._tensors]
        if missing:
            raise BundleError(
                f"engine lacks tensor(s) {', '.join(missing)} of the bundle contract (has {', '.join(self._tensors)})"
            )
        self._max_batch = self._tensors[IMAGE].max_shape[0]
        # Outputs: a dynamic batch dimension takes the image's largest batch.
        for t in self._tensors.values():
            if not t.is_input:
                t.max_shape = tuple(self._max_batch if d < 0 else d for d in t.shape)

    def _allocate(self, cuda: Any) -> None:
        for t in self._tensors.values():
            t.host = cuda.pagelocked_empty(int(np.prod(t.max_shape)), t.dtype)
            t.device = cuda.mem_alloc(max(t.host.nbytes, 1))
            if self._tensor_api:
                self._context.set_tensor_address(t.name, int(t.device))
        self._bindings = [0] * len(self._tensors)
        for t in self._tensors.values():
            self._bindings[t.index] = int(t.device)

    def _upload_text(self, bundle: Any, cuda: Any) -> None:
        text = bundle.text_embeddings()
        if text is None or TEXT not in self._tensors:
            return
        t = self._tensors[TEXT]
        if all(d >= 0 for d in t.shape) and tuple(text.shape) != t.shape:
            raise BundleError(f"text embeddings have shape {text.shape} but the engine wants {t.shape}")
        t.host[: text.size] = text.astype(t.dtype).ravel()
        self._set_shape(t, text.shape)
        cuda.memcpy_htod_async(t.device, t.host[: text.size], self._stream)
        self._stream.synchronize()

    def _upload_bank(self, bundle: Any, cuda: Any) -> None:
        """The few-shot bank (zeros until enrolment) is a constant input, uploaded once."""
        bank = bundle.memory_bank()
        if bank is not None:
            self._put_bank(bank, cuda)

    def _set_memory_bank_impl(self, bank: np.ndarray) -> None:
        if BANK not in self._tensors:
            raise BundleError("trt backend: no memory_bank input loaded (export with --bank-shots K)")
        with self._ctx:
            self._put_bank(np.ascontiguousarray(bank, np.float32), self._cuda)

    def _put_bank(self, bank: np.ndarray, cuda: Any) -> None:
        t = self._tensors[BANK]
        if tuple(bank.shape) != t.shape:
            raise BundleError(
                f"memory bank has shape {bank.shape} but the engine wants {t.shape}; rebuild the engine for this bundle"
            )
        t.host[: bank.size] = bank.astype(t.dtype).ravel()
        cuda.memcpy_htod_async(t.device, t.host[: bank.size], self._stream)
        self._stream.synchronize()

    def _set_shape(self, t: _Tensor, shape: tuple[int, ...]) -> None:
        if self._tensor_api:
            ok = self._context.set_input_shape(t.name, tuple(shape))
        else:
            ok = self._context.set_binding_shape(t.index, tuple(shape))
        if ok is False:
            raise DataError(
                f"TensorRT refused shape {tuple(shape)} for input '{t.name}' (engine profile max {t.max_shape})"
            )

    # -- infer ----------------------------------------------------------------------------
    def _infer_impl(self, batch: np.ndarray) -> Outputs:
        views = self._run(batch, (SCORE, MAP))
        # Copies: the page-locked buffers are overwritten by the next infer().
        return Outputs(
            score=views[SCORE][0].reshape(views[SCORE][1]).astype(np.float32),
            anomaly_map=views[MAP][0].reshape(views[MAP][1]).astype(np.float32),
        )

    def _patch_features_impl(self, batch: np.ndarray) -> np.ndarray:
        if FEATURES not in self._tensors:
            raise BundleError("engine has no patch_features output (export the bundle with --bank-shots K)")
        host, shape = self._run(batch, (FEATURES,))[FEATURES]
        return host.reshape(shape).astype(np.float32)

    def _run(self, batch: np.ndarray, outputs: tuple[str, ...]) -> dict[str, tuple[np.ndarray, tuple[int, ...]]]:
        img = self._tensors[IMAGE]
        n = self._validate(batch, img)
        with self._ctx:
            if n != self._n_set:
                self._set_shape(img, (n,) + tuple(batch.shape[1:]))
                self._n_set = n
            count = batch.size
            np.copyto(img.host[:count], batch.reshape(-1), casting="unsafe")
            self._cuda.memcpy_htod_async(img.device, img.host[:count], self._stream)
            if self._tensor_api:
                ok = self._context.execute_async_v3(self._stream.handle)
            else:
                ok = self._context.execute_async_v2(self._bindings, self._stream.handle)
            if not ok:
                raise BackendUnavailable(
                    "TensorRT execution failed: " + (" | ".join(self._logger.errors[-3:]) or "see the TensorRT log")
                )
            views = {}
            for name in outputs:
                t = self._tensors[name]
                shape = self._output_shape(t, n)
                size = int(np.prod(shape))
                self._cuda.memcpy_dtoh_async(t.host[:size], t.device, self._stream)
                views[name] = (t.host[:size], shape)
            self._stream.synchronize()
        return views

    def _validate(self, batch: np.ndarray, img: _Tensor) -> int:
        spec = self._image_spec
        want_dtype = np.dtype(spec.dtype)
        if not isinstance(batch, np.ndarray) or batch.dtype != want_dtype or batch.ndim != len(img.shape):
            raise DataError(
                f"trt backend: image batch must be {want_dtype} with {len(img.shape)} dims {img.shape}, got "
                f"{getattr(batch, 'dtype', type(batch).__name__)} {getattr(batch, 'shape', '')}"
            )
        if tuple(batch.shape[1:]) != tuple(img.max_shape[1:]):
            raise DataError(f"trt backend: image batch shape {batch.shape} does not match the engine input {img.shape}")
        n = int(batch.shape[0])
        if not 1 <= n <= self._max_batch or (img.shape[0] >= 0 and n != img.shape[0]):
            raise DataError(
                f"trt backend: batch of {n} outside what the engine was built for (1..{self._max_batch}); rebuild with --max-batch"
            )
        return n

    def _output_shape(self, t: _Tensor, n: int) -> tuple[int, ...]:
        if self._tensor_api:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(t.name))
        else:
            shape = tuple(int(d) for d in self._context.get_binding_shape(t.index))
        if any(d < 0 for d in shape):  # not resolved by the context: the batch is the only dynamic dim
            shape = tuple(n if d < 0 else d for d in shape)
        return shape

    @property
    def _context(self) -> Any:
        return self._held["context"]

    @property
    def _stream(self) -> Any:
        return self._held["stream"]

    def _describe_impl(self) -> Mapping[str, Any]:
        return self._info


def _free_gpu(ctx: compat.PrimaryContext, tensors: dict[str, _Tensor], held: dict[str, Any]) -> None:
    """Free the device buffers, then the TensorRT objects, with the CUDA context current."""
    with ctx:
        for t in tensors.values():
            if t.device is not None:
                t.device.free()
                t.device = None
        tensors.clear()  # the page-locked host buffers go with the last reference
        for key in ("stream", "context", "engine", "runtime"):  # reverse order of creation
            held.pop(key, None)
