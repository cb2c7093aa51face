"""Precision-drop report: FP32 vs FP16 vs INT8 on the same labelled images.

For each precision the bundle's ONNX model is run by a device backend from the registry
(`ort-cpu` by default: the OrtBackend `clipinspect run` uses) over the same files (the
device's preprocessing), and compared with FP32: max and mean |Δscore|, Pearson r
of the scores, image AUROC and its delta, and agreement of the OK/NG verdict at the bundle's
threshold. DESIGN §6b: judge INT8 by AUROC and score drift on real images, not by cosine on
random inputs.

FP16: the bundle's fp16 variant if it has one, otherwise a copy converted on the fly with
onnxruntime's float16 tool (keep_io_types, so the contract's uint8/float32 I/O is unchanged).
A precision that cannot run here becomes a row 'n/a (reason)'; one without a model is 'missing'.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.labelled_csv import image_source, read_labelled_csv
from edge_runtime.errors import BundleError, ClipInspectError, DataError, first_line
from edge_runtime.imageio import IMAGE_SUFFIXES
from edge_runtime.verdict import decide

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
_NORMAL = frozenset({"0", "good", "normal", "ok", "false"})


@dataclass(frozen=True)
class LabelledImage:
    """One test image with its label (0 normal, 1 anomalous) and group (its folder)."""

    path: Path
    label: int  # 0 normal, 1 anomalous
    group: str  # e.g. 'good', 'broken_large'


@dataclass(frozen=True)
class PrecisionRow:
    """One precision's result against FP32; only `precision`, `status` and `reason` are set
    when it is 'missing' (no model) or 'n/a' (cannot run on the backend)."""

    precision: str
    status: str  # 'ok', 'missing' or 'n/a'
    reason: str = ""
    model_file: str = ""
    max_abs_delta: float | None = None
    mean_abs_delta: float | None = None
    pearson_r: float | None = None
    auroc: float | None = None
    auroc_delta: float | None = None
    verdict_agreement: float | None = None  # fraction of images with the FP32 verdict
    ng_count: int | None = None
    ms_per_image: float | None = None


@dataclass(frozen=True)
class PrecisionReport:
    """The whole report: one row per precision, per-image scores and labels, the backend."""

    bundle: str
    images: str
    num_images: int
    num_anomalous: int
    threshold: float
    rows: tuple[PrecisionRow, ...]
    scores: dict[str, list[float]] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    labels: tuple[int, ...] = ()
    backend: str = "ort-cpu"  # the registry's backend that scored every precision

    def row(self, precision: str) -> PrecisionRow:
        """The row for `precision`.

        Raises:
            KeyError: no such row.
        """
        for r in self.rows:
            if r.precision == precision:
                return r
        raise KeyError(precision)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, per-image scores included."""
        return {
            "bundle": self.bundle,
            "images": self.images,
            "num_images": self.num_images,
            "num_anomalous": self.num_anomalous,
            "threshold": self.threshold,
            "backend": self.backend,
            "rows": [asdict(r) for r in self.rows],
            "per_image": [
                {"file": f, "label": lab, **{p: s[i] for p, s in self.scores.items()}}
                for i, (f, lab) in enumerate(zip(self.files, self.labels))
            ],
        }

    def write_json(self, path: str | Path) -> Path:
        """Write `to_dict()` to `path` (NaN/inf as null); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(_finite(self.to_dict()), indent=2) + "\n", encoding="utf-8")
        return p


# ---------------------------------------------------------------- metrics (pure)


def _auroc(labels: Sequence[int], scores: np.ndarray) -> float | None:
    """train.metrics' AUROC; None when it is undefined (one class only, or non-finite scores)."""
    from train.metrics import auroc

    if not np.isfinite(scores).all():
        return None
    value = auroc(np.asarray(labels), scores)
    return None if math.isnan(value) else value


def pearson(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Pearson r; None when either side is constant (r is undefined)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def compare_scores(
    precision: str,
    ref: np.ndarray,
    other: np.ndarray,
    labels: Sequence[int],
    threshold: float,
    *,
    model_file: str = "",
    ms_per_image: float | None = None,
) -> PrecisionRow:
    """One report row: `other` (scores at `precision`) against the FP32 reference `ref`."""
    ref = np.asarray(ref, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    delta = np.abs(other - ref)
    ref_auc = _auroc(labels, ref)
    auc = _auroc(labels, other)
    verdicts_ref = [decide(float(v), threshold) for v in ref]
    verdicts = [decide(float(v), threshold) for v in other]
    agree = sum(a == b for a, b in zip(verdicts_ref, verdicts)) / len(ref)
    return PrecisionRow(
        precision=precision,
        status="ok",
        model_file=model_file,
        max_abs_delta=float(delta.max()),
        mean_abs_delta=float(delta.mean()),
        pearson_r=pearson(ref, other),
        auroc=auc,
        auroc_delta=(auc - ref_auc) if auc is not None and ref_auc is not None else None,
        verdict_agreement=float(agree),
        ng_count=sum(v == "NG" for v in verdicts),
        ms_per_image=ms_per_image,
    )


# ---------------------------------------------------------------- images


def find_labelled_images(source: str | Path) -> list[LabelledImage]:
    """Labelled test images: MVTec category (`test/<good|defect>/`), MVTec root (every
    category's test split), a test folder itself (`good/` + defect folders), or a CSV
    `image_id,label` (paths relative to the CSV)."""
    src, is_csv = image_source(source, "test image source")
    if is_csv:
        out = _from_csv(src)
    elif (src / "test").is_dir():
        out = _test_split(src / "test")
    elif (src / "good").is_dir():
        out = _test_split(src)
    else:
        cats = sorted(p for p in src.iterdir() if (p / "test").is_dir())
        if not cats:
            raise DataError(
                f"{src} is not an MVTec-style test split: expected test/good and test/<defect> folders, a category root, or a CSV"
            )
        out = [img for c in cats for img in _test_split(c / "test", prefix=f"{c.name}/")]
    if not out:
        raise DataError(f"no labelled images found in {src}")
    return out


def _test_split(test_dir: Path, prefix: str = "") -> list[LabelledImage]:
    out = []
    for sub in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        label = 0 if sub.name.lower() in _NORMAL else 1
        for f in sorted(sub.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                out.append(LabelledImage(f, label, prefix + sub.name))
    return out


def _from_csv(path: Path) -> list[LabelledImage]:
    return [
        LabelledImage(image, label, "good" if label == 0 else text) for image, label, text in read_labelled_csv(path)
    ]


# ---------------------------------------------------------------- running


def fp16_model(fp32_path: Path, out_path: Path) -> Path:
    """FP16 copy of an FP32 ONNX model with float32/uint8 I/O kept (contract unchanged)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
    return out_path


def _score_all(backend: Any, batches: Sequence[np.ndarray], tick: Callable[[], None]) -> tuple[np.ndarray, float]:
    scores = []
    start = time.perf_counter()
    for batch in batches:
        scores.append(np.asarray(backend.infer(batch).score, dtype=np.float64).reshape(-1))
        tick()
    ms = (time.perf_counter() - start) * 1000.0 / max(1, len(batches))
    return np.concatenate(scores), ms


def precision_report(
    bundle_root: str | Path,
    images: str | Path,
    *,
    precisions: Sequence[str] = PRECISIONS,
    max_images: int = 0,
    convert_fp16: bool = True,
    threads: int = 1,
    progress: bool = True,
    backend: str = "ort-cpu",
) -> PrecisionReport:
    """Run every precision over the labelled images of `images` and compare with FP32.

    Args:
        bundle_root: the bundle folder (every file's sha256 is checked).
        images: labelled images (see `find_labelled_images`).
        precisions: which to compare; fp32, the reference, always runs first.
        max_images: use at most this many images, evenly spaced (0: all).
        convert_fp16: without an fp16 model in the bundle, convert the fp32 one for the fp16 row.
        threads: intra-op threads of backends that take the option (ONNX Runtime).
        progress: show a progress bar.
        backend: the registry's backend that scores (default ort-cpu, as the device runs it).

    Returns:
        One row per precision: 'ok' with the deltas, 'missing' or 'n/a' with the reason.

    Raises:
        BundleError: the bundle is invalid or its FP32 model cannot run on `backend`.
        DataError: no labelled images.
        ConfigError: `backend` is not in the backend table.
    """
    from edge_runtime.backends import BACKENDS
    from edge_runtime.bundle import load_bundle

    BACKENDS.entry(backend)  # an unknown name is a usage error, not an 'n/a' row
    bundle = load_bundle(bundle_root, verify=True)
    items = _sample(find_labelled_images(images), max_images)
    labels = [it.label for it in items]
    wanted = ["fp32"] + [p for p in precisions if p != "fp32"]
    rows, scores = _score_precisions(
        bundle, items, wanted, backend=backend, threads=threads, convert_fp16=convert_fp16, progress=progress
    )
    return PrecisionReport(
        bundle=str(bundle.root),
        images=str(images),
        num_images=len(items),
        num_anomalous=int(sum(labels)),
        threshold=float(bundle.manifest.threshold.value),
        rows=tuple(rows),
        scores=scores,
        files=tuple(str(it.path) for it in items),
        labels=tuple(labels),
        backend=backend,
    )


def _score_precisions(
    bundle: Any,
    items: Sequence[LabelledImage],
    wanted: Sequence[str],
    *,
    backend: str,
    threads: int,
    convert_fp16: bool,
    progress: bool,
) -> tuple[list[PrecisionRow], dict[str, list[float]]]:
    """One row per precision in `wanted` (fp32 first: the reference) and the scores of those that ran."""
    from edge_runtime.file_input import model_input  # the raw frame for raw-frame bundles

    pre = bundle.manifest.preprocess
    batches = [model_input(it.path, pre) for it in items]
    labels = [it.label for it in items]
    threshold = float(bundle.manifest.threshold.value)
    bar = _bar(len(items) * len(wanted), progress)
    rows: list[PrecisionRow] = []
    scores: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="clipinspect-precision-") as tmp:
        for precision in wanted:
            row, got = _run_precision(bundle, precision, batches, Path(tmp), backend, threads, convert_fp16, bar)
            if got is not None:
                scores[precision] = [float(v) for v in got]
                row = compare_scores(
                    precision,
                    np.asarray(scores["fp32"]),
                    got,
                    labels,
                    threshold,
                    model_file=row.model_file,
                    ms_per_image=row.ms_per_image,
                )
            rows.append(row)
    bar.close()
    return rows, scores


def _sample(items: list[LabelledImage], max_images: int) -> list[LabelledImage]:
    if max_images and len(items) > max_images:
        idx = np.linspace(0, len(items) - 1, max_images).round().astype(int)
        items = [items[i] for i in sorted(set(idx))]
    return items


def _run_precision(
    bundle: Any,
    precision: str,
    batches: Sequence[np.ndarray],
    tmp: Path,
    backend: str,
    threads: int,
    convert_fp16: bool,
    bar: Any,
) -> tuple[PrecisionRow, np.ndarray | None]:
    """Scores of one precision on the device backend, or the row saying why there are none."""
    from edge_runtime.backends import BACKENDS, make_backend

    try:
        view, how = _model_for(bundle, precision, tmp, convert_fp16)
    except BundleError as exc:
        bar.update(len(batches))
        return PrecisionRow(precision, "missing", str(exc)), None
    options = {"intra_op_threads": threads} if BACKENDS.options_type(backend) is not None else {}
    try:
        with closing(make_backend(backend, **options)) as runner:
            runner.load(view, precision)
            got, ms = _score_all(runner, batches, lambda: bar.update(1))
    except Exception as exc:
        why = f"cannot run on {backend}: {first_line(exc, with_type=not isinstance(exc, ClipInspectError), limit=200)}"
        if precision == "fp32":
            raise BundleError(f"the FP32 model of {bundle.root} {why}") from None
        return PrecisionRow(precision, "n/a", why, model_file=how), None
    log.info("precision %s: %s, %.1f ms/image on %s", precision, how, ms, backend)
    return PrecisionRow(precision, "ok", model_file=how, ms_per_image=ms), got


class BundleWithModel:
    """A bundle with one more ONNX model (e.g. an fp16 copy converted for this report): what
    a backend's `load` reads from a bundle, with `model_path(precision)` pointing at it."""

    def __init__(self, bundle: Any, precision: str, path: Path) -> None:
        self._bundle, self._precision, self._path = bundle, precision, Path(path)

    def model_path(self, precision: str = "fp32") -> Path:
        """The extra model for its precision, the bundle's own otherwise."""
        return self._path if precision == self._precision else self._bundle.model_path(precision)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bundle, name)


def _model_for(bundle: Any, precision: str, tmp: Path, convert_fp16: bool) -> tuple[Any, str]:
    """The bundle to load `precision` from (with a converted fp16 model if needed) and its model's name."""
    try:
        return bundle, bundle.model_path(precision).name
    except BundleError:
        if precision != "fp16" or not convert_fp16:
            raise
    path = fp16_model(bundle.model_path("fp32"), tmp / "model.fp16.onnx")
    return BundleWithModel(bundle, "fp16", path), "model.fp16.onnx (converted on the fly, keep_io_types)"


def _bar(total: int, enabled: bool):
    from calibration.qdq import _progress

    return _progress(total, "scoring", enabled)


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# ---------------------------------------------------------------- table


def format_table(report: PrecisionReport) -> str:
    """The report as the text table `precision-report` prints."""

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    head = f"{'precision':<10} {'max|Δscore|':>12} {'mean|Δscore|':>13} {'pearson r':>10} {'AUROC':>7} {'ΔAUROC':>8} {'verdicts=':>10} {'NG':>4} {'ms/img':>7}  model"
    lines = [
        f"precision report: {report.num_images} images ({report.num_anomalous} anomalous) from {report.images}",
        f"bundle {report.bundle}, threshold {report.threshold:.6g}; deltas are against FP32 on {report.backend}",
        head,
        "-" * len(head),
    ]
    for r in report.rows:
        if r.status != "ok":
            lines.append(f"{r.precision:<10} {r.status} ({r.reason})")
            continue
        agree = "-" if r.verdict_agreement is None else f"{100 * r.verdict_agreement:.1f}%"
        lines.append(
            f"{r.precision:<10} {f(r.max_abs_delta, '.3g'):>12} {f(r.mean_abs_delta, '.3g'):>13} {f(r.pearson_r, '.5f'):>10} "
            f"{f(r.auroc, '.4f'):>7} {f(r.auroc_delta, '+.4f'):>8} {agree:>10} {r.ng_count if r.ng_count is not None else '-':>4} {f(r.ms_per_image, '.1f'):>7}  {r.model_file}"
        )
    if report.num_anomalous in (0, report.num_images):
        lines.append("note: AUROC needs both normal and anomalous images; only one class was given")
    return "\n".join(lines)
