"""The Backend seam: one small runner interface for every inference engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Outputs:
    """Model outputs for a batch: `score` [N] (image anomaly score, higher = more anomalous)
    and `anomaly_map` [N, h, w] on the patch grid, as defined in the bundle manifest."""

    score: np.ndarray
    anomaly_map: np.ndarray


@runtime_checkable
class Backend(Protocol):
    name: str  # e.g. 'ort-cpu', 'trt'

    def load(self, bundle: Any, precision: str) -> None:
        """Load the bundle's model for `precision` ('fp32', 'fp16', 'int8') or raise
        BackendUnavailable; never substitute another provider or precision."""

    def infer(self, batch: np.ndarray) -> Outputs:
        """`batch` is what the bundle's `image` input wants (uint8 NHWC RGB by default)."""

    def describe(self) -> Mapping[str, Any]:
        """What actually ran: backend, provider(s), precision, device, versions."""

    def close(self) -> None: ...
