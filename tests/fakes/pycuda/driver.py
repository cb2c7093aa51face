"""Stand-in for pycuda.driver. See the package docstring."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import numpy as np


class Error(Exception):
    pass


class LogicError(Error):
    pass


class MemoryError(Error):
    pass


class _State:
    def __init__(self) -> None:
        self.initialized = False
        self.devices: list[tuple[str, tuple[int, int], int]] = [("Orin", (8, 7), 8 << 30)]
        self.tls = threading.local()
        self.allocations: dict[int, DeviceAllocation] = {}
        self.pagelocked: list[tuple[int, int]] = []  # (start, end) addresses of live page-locked buffers
        self.pagelocked_keep: list[np.ndarray] = []
        self.streams: dict[int, Stream] = {}
        self.next_ptr = itertools.count(0x7F0000000000, 0x100000)
        self.next_handle = itertools.count(0x5500)
        self.stats = {"mem_alloc": 0, "pagelocked_empty": 0, "htod": 0, "dtoh": 0, "synchronize": 0}
        self.primary: dict[int, Context] = {}


_state = _State()


def _fake_reset(name: str = "Orin", compute_capability: tuple[int, int] = (8, 7)) -> None:
    """Tests: forget everything and pretend device 0 is `name` with `compute_capability`."""
    global _state
    _state = _State()
    _state.devices = [(name, tuple(compute_capability), 8 << 30)]


def _fake_state() -> _State:
    return _state


def init(flags: int = 0) -> None:
    _state.initialized = True


def _stack() -> list[Context]:
    if not hasattr(_state.tls, "stack"):
        _state.tls.stack = []
    return _state.tls.stack


def _require_context(what: str) -> None:
    if not _state.initialized:
        raise LogicError(f"{what} failed: not initialized")
    if not _stack():
        raise LogicError(f"{what} failed: invalid device context")


class Device:
    def __init__(self, ordinal: int) -> None:
        if not _state.initialized:
            raise LogicError("cuDeviceGet failed: initialization error")
        if not 0 <= ordinal < len(_state.devices):
            raise LogicError("cuDeviceGet failed: invalid device ordinal")
        self.ordinal = ordinal

    @staticmethod
    def count() -> int:
        if not _state.initialized:
            raise LogicError("cuDeviceGetCount failed: initialization error")
        return len(_state.devices)

    def name(self) -> str:
        return _state.devices[self.ordinal][0]

    def compute_capability(self) -> tuple[int, int]:
        return _state.devices[self.ordinal][1]

    def total_memory(self) -> int:
        return _state.devices[self.ordinal][2]

    def make_context(self, flags: int = 0) -> Context:
        ctx = Context(self)
        ctx.push()
        return ctx

    def retain_primary_context(self) -> Context:
        ctx = _state.primary.setdefault(self.ordinal, Context(self))
        ctx.retained += 1
        return ctx


class Context:
    def __init__(self, device: Device) -> None:
        self.device = device
        self.retained = 0

    def push(self) -> None:
        _stack().append(self)

    @staticmethod
    def pop() -> None:
        stack = _stack()
        if not stack:
            raise LogicError("cuCtxPopCurrent failed: invalid device context")
        stack.pop()

    def detach(self) -> None:
        self.retained -= 1

    @staticmethod
    def synchronize() -> None:
        _require_context("cuCtxSynchronize")
        for s in list(_state.streams.values()):
            s.synchronize()

    @staticmethod
    def get_device() -> Device:
        _require_context("cuCtxGetDevice")
        return _stack()[-1].device


class DeviceAllocation:
    def __init__(self, nbytes: int) -> None:
        self.ptr = next(_state.next_ptr)
        self.nbytes = nbytes
        self.mem = np.zeros(nbytes, np.uint8)
        self.freed = False

    def __int__(self) -> int:
        if self.freed:
            raise LogicError("cannot use a freed device allocation")
        return self.ptr

    __index__ = __int__

    def free(self) -> None:
        if not self.freed:
            self.freed = True
            _state.allocations.pop(self.ptr, None)


def mem_alloc(nbytes: int) -> DeviceAllocation:
    _require_context("cuMemAlloc")
    if int(nbytes) <= 0:
        raise LogicError("cuMemAlloc failed: invalid argument")
    a = DeviceAllocation(int(nbytes))
    _state.allocations[a.ptr] = a
    _state.stats["mem_alloc"] += 1
    return a


def _fake_device_view(ptr: int, nbytes: int) -> np.ndarray:
    """The bytes at device address `ptr` (start of a live allocation or inside one)."""
    for a in _state.allocations.values():
        if a.ptr <= ptr < a.ptr + a.nbytes:
            off = ptr - a.ptr
            if off + nbytes > a.nbytes:
                raise LogicError(
                    f"device access of {nbytes} bytes at {ptr:#x} overruns an allocation of {a.nbytes} bytes"
                )
            return a.mem[off : off + nbytes]
    raise LogicError(f"{ptr:#x} is not a live device allocation (freed, or never allocated)")


def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
    _require_context("cuMemHostAlloc")
    arr = np.empty(shape, dtype, order=order)
    start = arr.__array_interface__["data"][0]
    _state.pagelocked.append((start, start + max(arr.nbytes, 1)))
    _state.pagelocked_keep.append(arr)  # page-locked memory lives until freed; keep the address valid
    _state.stats["pagelocked_empty"] += 1
    return arr


def pagelocked_zeros(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
    arr = pagelocked_empty(shape, dtype, order, mem_flags)
    arr[...] = 0
    return arr


def _is_pagelocked(arr: np.ndarray) -> bool:
    start = arr.__array_interface__["data"][0]
    return any(lo <= start and start + arr.nbytes <= hi for lo, hi in _state.pagelocked)


def _host_array(x: Any, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what}: expected a numpy array (buffer), got {type(x).__name__}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{what}: host buffer must be contiguous")
    return x


def _ptr(dest: Any) -> int:
    if isinstance(dest, DeviceAllocation):
        return int(dest)
    if isinstance(dest, (int, np.integer)):
        return int(dest)
    raise TypeError(f"expected a DeviceAllocation or int device pointer, got {type(dest).__name__}")


class Stream:
    def __init__(self, flags: int = 0) -> None:
        _require_context("cuStreamCreate")
        self.handle = next(_state.next_handle)
        self._queue: list[Callable[[], None]] = []
        _state.streams[self.handle] = self

    def _enqueue(self, op: Callable[[], None]) -> None:
        self._queue.append(op)

    def synchronize(self) -> None:
        _state.stats["synchronize"] += 1
        ops, self._queue = self._queue, []
        for op in ops:
            op()

    def is_done(self) -> bool:
        return not self._queue


def _fake_stream(handle: int) -> Stream | None:
    """The Stream with this handle (0 = the legacy default stream: None, run at once)."""
    if handle == 0:
        return None
    if handle not in _state.streams:
        raise LogicError(f"{handle:#x} is not a stream handle")
    return _state.streams[handle]


def _htod(ptr: int, src: np.ndarray) -> None:
    _fake_device_view(ptr, src.nbytes)[...] = np.frombuffer(src.tobytes(), np.uint8)


def _dtoh(dest: np.ndarray, ptr: int) -> None:
    dest.reshape(-1).view(np.uint8)[...] = _fake_device_view(ptr, dest.nbytes)


def memcpy_htod(dest: Any, src: Any) -> None:
    _require_context("cuMemcpyHtoD")
    src = _host_array(src, "memcpy_htod")
    _state.stats["htod"] += 1
    _htod(_ptr(dest), src)


def memcpy_dtoh(dest: Any, src: Any) -> None:
    _require_context("cuMemcpyDtoH")
    dest = _host_array(dest, "memcpy_dtoh")
    _state.stats["dtoh"] += 1
    _dtoh(dest, _ptr(src))


def memcpy_htod_async(dest: Any, src: Any, stream: Stream | None = None) -> None:
    _queue_copy("memcpy_htod_async", "cuMemcpyHtoDAsync", src, dest, stream, to_device=True)


def memcpy_dtoh_async(dest: Any, src: Any, stream: Stream | None = None) -> None:
    _queue_copy("memcpy_dtoh_async", "cuMemcpyDtoHAsync", dest, src, stream, to_device=False)


def _queue_copy(api: str, cu_call: str, host: Any, device: Any, stream: Stream | None, to_device: bool) -> None:
    """The async copies' checks (context, page-locked host buffer, device pointer), then the copy on `stream`."""
    _require_context(cu_call)
    host = _host_array(host, api)
    if not _is_pagelocked(host):
        raise LogicError(f"{api}: host memory is not page-locked (use pagelocked_empty)")
    ptr = _ptr(device)
    _fake_device_view(ptr, host.nbytes)  # fail now on a bad pointer, like the driver's argument check
    _state.stats["htod" if to_device else "dtoh"] += 1
    # The copy happens when the stream runs: the host buffer must not change before then.
    op = (lambda: _htod(ptr, host)) if to_device else (lambda: _dtoh(host, ptr))
    stream._enqueue(op) if stream is not None else op()
