"""BackendBase's life cycle, on a test backend and on the real ONNX Runtime backend."""

from __future__ import annotations

import gc
import logging
import weakref

import numpy as np
import pytest

from edge_runtime.backends import BackendBase, BackendNotLoaded, Outputs, make_backend
from edge_runtime.backends.base import Releaser
from edge_runtime.errors import BackendUnavailable, BundleError, ClipInspectError, ConfigError


class Handle:
    """Something native a backend must give back (a buffer, a context)."""

    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name, self.open = log, name, True

    def free(self) -> None:
        if not self.open:
            raise AssertionError(f"{self.name} freed twice")
        self.open = False
        self.log.append(self.name)


class Recording(BackendBase):
    name = "recording"

    def __init__(self, log: list[str], fail_load: bool = False) -> None:
        super().__init__()
        self.log, self.fail_load = log, fail_load

    def _load_impl(self, bundle, precision, releaser: Releaser) -> None:
        releaser.push(Handle(self.log, "context").free)
        releaser.push(Handle(self.log, "buffer").free)
        if self.fail_load:
            raise BackendUnavailable("recording: no such device")
        self.precision = precision

    def _infer_impl(self, batch):
        return Outputs(np.zeros(len(batch), np.float32), np.zeros((len(batch), 2, 2), np.float32))


def test_infer_before_load_and_after_close_is_one_clean_line():
    b = Recording([])
    with pytest.raises(BackendNotLoaded) as info:
        b.infer(np.zeros((1, 4, 4, 3), np.uint8))
    assert str(info.value) == "recording: infer() before load()"
    assert isinstance(info.value, ClipInspectError) and isinstance(info.value, BackendUnavailable)
    b.load(None, "fp32")
    assert b.infer(np.zeros((2, 4, 4, 3), np.uint8)).score.shape == (2,)
    b.close()
    with pytest.raises(BackendNotLoaded, match=r"^recording: infer\(\) after close\(\)$"):
        b.infer(np.zeros((1, 4, 4, 3), np.uint8))


def test_load_twice_is_refused_and_reload_after_close_works():
    log: list[str] = []
    b = Recording(log)
    b.load(None, "fp32")
    with pytest.raises(BackendUnavailable, match="close\\(\\) it first"):
        b.load(None, "fp32")
    assert log == []  # the refused load freed nothing of the loaded one
    b.close()
    b.load(None, "int8")
    assert b.loaded and b.precision == "int8"
    b.close()
    assert log == ["buffer", "context"] * 2


def test_close_is_idempotent_and_releases_in_reverse_order_once():
    log: list[str] = []
    b = Recording(log)
    b.close()  # never loaded: nothing to do, no error
    b.load(None, "fp32")
    b.close()
    b.close()
    assert log == ["buffer", "context"] and not b.loaded


def test_context_manager_closes():
    log: list[str] = []
    with Recording(log) as b:
        b.load(None, "fp32")
        assert b.loaded
    assert log == ["buffer", "context"] and not b.loaded


def test_failed_load_releases_what_it_took():
    log: list[str] = []
    b = Recording(log, fail_load=True)
    with pytest.raises(BackendUnavailable, match="no such device"):
        b.load(None, "fp32")
    assert log == ["buffer", "context"] and not b.loaded
    with pytest.raises(BackendNotLoaded):
        b.infer(np.zeros((1, 4, 4, 3), np.uint8))


def test_garbage_collection_releases_a_backend_never_closed():
    log: list[str] = []
    b = Recording(log)
    b.load(None, "fp32")
    ref = weakref.ref(b)
    del b
    gc.collect()
    assert ref() is None, "the release callbacks keep the backend alive"
    assert log == ["buffer", "context"]


def test_teardown_never_raises_and_finishes(caplog):
    log: list[str] = []

    def broken() -> None:
        raise RuntimeError("cuMemFree failed: an illegal memory access")

    class Broken(Recording):
        def _load_impl(self, bundle, precision, releaser):
            super()._load_impl(bundle, precision, releaser)
            releaser.push(broken)

        def _close_impl(self):
            raise RuntimeError("close hook failed")

    b = Broken(log)
    b.load(None, "fp32")
    with caplog.at_level(logging.WARNING):
        b.close()
    assert log == ["buffer", "context"]  # the rest still ran
    assert "illegal memory access" in caplog.text and "close hook failed" in caplog.text


def test_a_release_callback_may_not_hold_the_backend():
    class Leaky(Recording):
        def _load_impl(self, bundle, precision, releaser):
            releaser.push(self.close)

    with pytest.raises(TypeError, match="must not hold the backend"):
        Leaky([]).load(None, "fp32")


def test_backend_without_a_few_shot_path_says_so_in_one_line():
    b = Recording([])
    with pytest.raises(BackendNotLoaded, match=r"^recording: set_memory_bank\(\) before load\(\)$"):
        b.set_memory_bank(np.zeros((1, 2, 4), np.float32))
    b.load(None, "fp32")
    with pytest.raises(BundleError, match="backend 'recording' cannot return patch features"):
        b.patch_features(np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(BundleError, match="backend 'recording' cannot switch memory banks"):
        b.set_memory_bank(np.zeros((1, 2, 4), np.float32))


def test_default_create_refuses_options():
    with pytest.raises(ConfigError, match="backend x takes no options \\(got threads\\)"):
        BackendBase.create("x", threads=2)


def test_ort_backend_session_goes_with_close_and_with_the_backend(toy_bundle):
    b = make_backend("ort-cpu", intra_op_threads=1)
    with pytest.raises(BackendNotLoaded, match="ort-cpu: infer\\(\\) before load\\(\\)"):
        b.infer(np.zeros((1, 64, 64, 3), np.uint8))
    b.load(toy_bundle, "fp32")
    session = weakref.ref(b._run.session)
    b.close()
    gc.collect()
    assert session() is None
    with pytest.raises(BackendNotLoaded, match="patch_features\\(\\) after close"):
        b.patch_features(np.zeros((1, 64, 64, 3), np.uint8))

    b = make_backend("ort-cpu", intra_op_threads=1)
    b.load(toy_bundle, "fp32")
    session = weakref.ref(b._run.session)
    del b
    gc.collect()
    assert session() is None
