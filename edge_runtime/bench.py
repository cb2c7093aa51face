"""Benchmarks: model-only (like trtexec) and end-to-end through the real pipeline.

* model-only: one fixed preprocessed input, warm-up, N timed `infer` calls -> latency
  percentiles and throughput. Nothing else runs.
* end-to-end: the same loaded backend inside the real Pipeline (source -> preprocess ->
  infer -> postprocess -> publish). The default source is `synthetic://` unpaced and the
  inference queue is a hand-off (0, block), so frames come as fast as the pipeline takes
  them and never age in a queue: pipelined fps and per-frame latency are then directly
  comparable with the model-only numbers (`ratios` in the result).

Results are plain dicts (JSON-ready); `write_plot` draws the per-stage chart with OpenCV so
the device can always plot (matplotlib is not an edge dependency).
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.stats import LatencyRecorder, summarize

log = logging.getLogger(__name__)

E2E_STAGES = ("capture_wait", "queue", "preprocess", "inference", "postprocess", "publish", "total")


@dataclass(frozen=True)
class BenchSpec:
    """One backend:precision to measure (parsed from `bench --compare`)."""

    backend: str
    precision: str = "fp32"

    @classmethod
    def parse_list(cls, text: str) -> list[BenchSpec]:
        """'ort-cpu:fp32,ort-cpu:int8,trt:fp16' -> specs (precision defaults to fp32)."""
        specs = []
        for item in (p.strip() for p in text.split(",")):
            if not item:
                continue
            name, _, precision = item.partition(":")
            precision = precision or "fp32"
            if precision not in ("fp32", "fp16", "int8"):
                raise ConfigError(f"--compare item {item!r}: precision must be fp32, fp16 or int8")
            specs.append(cls(name, precision))
        if not specs:
            raise ConfigError("--compare needs at least one BACKEND[:PRECISION]")
        return specs

    @property
    def label(self) -> str:
        """`backend:precision`, as runs are named in tables and results."""
        return f"{self.backend}:{self.precision}"


class Progress:
    """A one-line stderr progress indicator (tqdm is not an edge dependency)."""

    def __init__(self, label: str, total: int, enabled: bool = True) -> None:
        self.label, self.total, self.enabled = label, total, enabled and total > 0
        self.tty = sys.stderr.isatty()
        # A terminal gets one line rewritten in place; a log file a line every few seconds.
        self.every_s = 0.25 if self.tty else 5.0
        self._last = time.monotonic()
        self._t0 = self._last

    def update(self, n: int) -> None:
        """Show `n` of the total done, if enough time has passed since the last line (or it is the last).

        Args:
            n: items done so far.
        """
        now = time.monotonic()
        if self.enabled and (now - self._last >= self.every_s or n >= self.total):
            self._last = now
            rate = n / max(now - self._t0, 1e-9)
            text = f"{self.label}: {n}/{self.total} ({rate:.1f}/s)"
            sys.stderr.write(f"\r{text}" + ("\n" if n >= self.total else "") if self.tty else text + "\n")
            sys.stderr.flush()


def fixed_input(bundle: Any, batch: int = 1, seed: int = 0) -> np.ndarray:
    """A preprocessed batch as the bundle's `image` input wants it (uint8 NHWC or float NCHW)."""
    from edge_runtime.preprocess import normalize

    spec = bundle.manifest.preprocess
    if spec.input_layout == "frame_uint8":
        from edge_runtime.rawframe import frame_shape

        return np.random.default_rng(seed).integers(
            0, 256, (batch, *frame_shape(spec.input_format, spec.input_size)), dtype=np.uint8
        )
    h, w = spec.image_size
    x = np.random.default_rng(seed).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    if spec.input_layout == "NCHW_float32":
        return normalize(x, spec.mean, spec.std)
    return x


def default_source(bundle: Any) -> str:
    """Unpaced synthetic frames the bundle takes: model-size RGB, or a raw-frame bundle's
    camera frames (format and size from the manifest)."""
    spec = bundle.manifest.preprocess
    if spec.input_layout == "frame_uint8":
        from edge_runtime.rawframe import pixel_format

        h, w = spec.input_size
        return f"synthetic://?width={w}&height={h}&pixel_format={pixel_format(spec.input_format)}"
    h, w = spec.image_size
    return f"synthetic://?width={w}&height={h}"


def bench_model(
    backend: Any,
    bundle: Any,
    *,
    iterations: int = 100,
    warmup: int = 10,
    batch: int = 1,
    progress: bool = True,
    label: str = "model-only",
) -> dict[str, Any]:
    """Timed `infer` calls on one fixed input (no preprocessing, no copies beyond the backend's)."""
    if iterations < 1 or warmup < 0 or batch < 1:
        raise ConfigError("bench needs iterations >= 1, warmup >= 0, batch >= 1")
    x = fixed_input(bundle, batch)
    for _ in range(warmup):
        backend.infer(x)
    times = np.empty(iterations, np.float64)
    bar = Progress(label, iterations, progress)
    t_all = time.perf_counter()
    for i in range(iterations):
        t0 = time.perf_counter()
        backend.infer(x)
        times[i] = (time.perf_counter() - t0) * 1e3
        bar.update(i + 1)
    wall = time.perf_counter() - t_all
    s = summarize(times)
    return {
        "iterations": iterations,
        "warmup": warmup,
        "batch": batch,
        "latency_ms": s.as_dict(),
        "fps": round(iterations * batch / wall, 3),
        "wall_s": round(wall, 4),
        "samples_ms": [round(float(t), 4) for t in times],
    }


def bench_e2e(
    session_factory: Callable[[], Any],
    *,
    frames: int = 100,
    warmup: int = 10,
    progress: bool = True,
    label: str = "end-to-end",
) -> dict[str, Any]:
    """Run the real pipeline: `warmup` frames unrecorded, then `frames` measured.
    `session_factory()` is a context manager yielding a RuntimeSession (see edge_runtime.session)."""
    from edge_runtime.session import run_pipeline

    if frames < 2 or warmup < 0:
        raise ConfigError("end-to-end bench needs frames >= 2 and warmup >= 0")
    if warmup:
        with session_factory() as session:
            run_pipeline(session, max_frames=warmup)
    recorder = LatencyRecorder()
    bar = Progress(label, frames, progress)
    with session_factory() as session:
        result = run_pipeline(session, max_frames=frames, recorder=recorder, on_frame=bar.update)
        source_stats = dict(session.source.stats())
    stages = {s: recorder.summary(s).as_dict() for s in E2E_STAGES if recorder.samples(s).size}
    return {
        "frames": result.published,
        "captured": result.captured,
        "warmup": warmup,
        "fps": round(result.fps, 3),
        "drops": result.dropped,
        "counters": dict(result.counters),
        "source_stats": source_stats,
        "stages": stages,
        "stop_reason": result.stop_reason,
        "samples_ms": {s: [round(float(v), 4) for v in recorder.samples(s)] for s in stages},
    }


def merge_model(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several model-only rounds as one result (all samples; fps over the summed time)."""
    if len(parts) == 1:
        return dict(parts[0])
    samples = [t for p in parts for t in p["samples_ms"]]
    iters = sum(p["iterations"] for p in parts)
    wall = sum(p["wall_s"] for p in parts)
    return {
        "iterations": iters,
        "warmup": parts[0]["warmup"],
        "batch": parts[0]["batch"],
        "rounds": len(parts),
        "latency_ms": summarize(samples).as_dict(),
        "fps": round(iters * parts[0]["batch"] / wall, 3) if wall else 0.0,
        "wall_s": round(wall, 4),
        "samples_ms": samples,
    }


def merge_e2e(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several end-to-end rounds as one result: pooled stage samples; fps = frame intervals
    over their summed duration (the gaps between rounds do not count)."""
    if len(parts) == 1:
        return dict(parts[0])
    stages: dict[str, list[float]] = {}
    for p in parts:
        for name, vals in p["samples_ms"].items():
            stages.setdefault(name, []).extend(vals)
    intervals = sum(max(p["frames"] - 1, 0) for p in parts)
    busy = sum((p["frames"] - 1) / p["fps"] for p in parts if p["fps"] > 0 and p["frames"] > 1)
    counters: dict[str, int] = {}
    for p in parts:
        for k, v in p["counters"].items():
            counters[k] = counters.get(k, 0) + v
    return {
        "frames": sum(p["frames"] for p in parts),
        "captured": sum(p["captured"] for p in parts),
        "warmup": parts[0]["warmup"],
        "rounds": len(parts),
        "fps": round(intervals / busy, 3) if busy else 0.0,
        "drops": sum(p["drops"] for p in parts),
        "counters": counters,
        "source_stats": parts[-1]["source_stats"],
        "stages": {name: summarize(vals).as_dict() for name, vals in stages.items()},
        "stop_reason": parts[-1]["stop_reason"],
        "samples_ms": stages,
    }


def ratios(model: Mapping[str, Any] | None, e2e: Mapping[str, Any] | None) -> dict[str, float]:
    """end-to-end p50 / model-only p50 (latency overhead) and pipelined / model-only fps."""
    if not model or not e2e or "total" not in e2e.get("stages", {}):
        return {}
    m50 = model["latency_ms"]["p50_ms"]
    out = {
        "e2e_p50_over_model_p50": round(e2e["stages"]["total"]["p50_ms"] / m50, 4) if m50 else float("nan"),
        "fps_over_model_fps": round(e2e["fps"] / model["fps"], 4) if model["fps"] else float("nan"),
    }
    if "inference" in e2e["stages"] and m50:
        out["inference_stage_p50_over_model_p50"] = round(e2e["stages"]["inference"]["p50_ms"] / m50, 4)
    return out


def round_ratios(models: Sequence[Mapping[str, Any]], e2es: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Ratios of each round's own model-only and end-to-end halves, and their medians: each
    pair ran back to back, so on a shared machine this is what isolates the pipeline's
    overhead from other load (the pooled ratios mix quiet and busy periods)."""
    per = [ratios(m, e) for m, e in zip(models, e2es)]
    out: dict[str, Any] = {"per_round": per}
    for key in ("e2e_p50_over_model_p50", "fps_over_model_fps"):
        vals = [r[key] for r in per if key in r and np.isfinite(r[key])]
        if vals:
            out[f"median_round_{key}"] = round(float(np.median(vals)), 4)
    return out


def host_info() -> dict[str, Any]:
    """Machine, Python, CPU count, platform and the onnxruntime version (when installed), for the results."""
    import os

    info: dict[str, Any] = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ImportError:
        pass
    return info


def format_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """One row per run: model-only and end-to-end latency and fps, drops, and their ratios.

    Args:
        runs: run results as `bench` makes them (keys label, model, e2e, ratios, backend_info).

    Returns:
        The table with a header and a closing line explaining the ratios; "-" where a value is missing.
    """
    head = (
        f"{'backend:precision':<20}{'provider':<24}{'model p50':>10}{'model fps':>10}{'e2e p50':>10}{'infer p50':>10}{'e2e fps':>9}{'drops':>7}"
        f"{'p50 ratio':>10}{'fps ratio':>10}{'p50 r/rnd':>10}{'fps r/rnd':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in runs:
        m = r.get("model") or {}
        e = r.get("e2e") or {}
        q = r.get("ratios") or {}
        st = e.get("stages", {})

        def f(v: Any, fmt: str) -> str:
            return format(v, fmt) if isinstance(v, (int, float)) else "-"

        lines.append(
            f"{r['label']:<20}{str(r.get('backend_info', {}).get('provider', r.get('backend_info', {}).get('device', '?')))[:23]:<24}"
            f"{f(m.get('latency_ms', {}).get('p50_ms'), '.2f'):>10}{f(m.get('fps'), '.1f'):>10}"
            f"{f(st.get('total', {}).get('p50_ms'), '.2f'):>10}{f(st.get('inference', {}).get('p50_ms'), '.2f'):>10}"
            f"{f(e.get('fps'), '.1f'):>9}{f(e.get('drops'), 'd'):>7}"
            f"{f(q.get('e2e_p50_over_model_p50'), '.3f'):>10}{f(q.get('fps_over_model_fps'), '.3f'):>10}"
            f"{f(q.get('median_round_e2e_p50_over_model_p50'), '.3f'):>10}{f(q.get('median_round_fps_over_model_fps'), '.3f'):>10}"
        )
    lines.append(
        "ratios: end-to-end / model-only, pooled over all rounds; 'r/rnd' = median of each round's own ratio (--rounds > 1)"
    )
    return "\n".join(lines)


def format_stage_table(run: Mapping[str, Any]) -> str:
    """Per-stage latency percentiles (p50, p90, p99, max) of one run, model-only first.

    Args:
        run: one run result (keys label, model, e2e).

    Returns:
        The table as text.
    """
    lines = [f"{run['label']}: per-stage latency (ms)", f"  {'stage':<14}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}"]
    m = run.get("model")
    if m:
        s = m["latency_ms"]
        lines.append(
            f"  {'model-only':<14}{s['p50_ms']:>9.2f}{s['p90_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['max_ms']:>9.2f}"
        )
    for name, s in (run.get("e2e") or {}).get("stages", {}).items():
        lines.append(f"  {name:<14}{s['p50_ms']:>9.2f}{s['p90_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['max_ms']:>9.2f}")
    return "\n".join(lines)


_COLOURS = [
    (180, 119, 31),
    (14, 127, 255),
    (44, 160, 44),
    (40, 39, 214),
    (189, 103, 148),
    (75, 86, 140),
    (194, 119, 227),
    (127, 127, 127),
]


def write_plot(runs: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """PNG: one row per run; bars = p50 per stage (model-only first), whisker to p99."""
    import cv2

    path = Path(path)
    rows = []
    for r in runs:
        bars = []
        if r.get("model"):
            s = r["model"]["latency_ms"]
            bars.append(("model-only", s["p50_ms"], s["p99_ms"]))
        for name, s in (r.get("e2e") or {}).get("stages", {}).items():
            bars.append((name, s["p50_ms"], s["p99_ms"]))
        rows.append((r["label"], bars))
    bar_h, gap, left, right, top = 18, 4, 150, 40, 50
    heights = [30 + len(b) * (bar_h + gap) + 10 for _, b in rows]
    width = 900
    height = top + sum(heights) + 20
    img = np.full((height, width, 3), 255, np.uint8)
    vmax = max([p99 for _, bars in rows for _, _, p99 in bars if np.isfinite(p99)] + [1e-3])
    scale = (width - left - right) / (vmax * 1.05)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(
        img, "clipinspect bench: p50 per stage (bar), p99 (whisker), ms", (10, 30), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA
    )
    y = top
    for (label, bars), h in zip(rows, heights):
        cv2.putText(img, label, (10, y + 20), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        yy = y + 30
        for i, (name, p50, p99) in enumerate(bars):
            colour = _COLOURS[i % len(_COLOURS)]
            cv2.putText(img, name, (20, yy + bar_h - 5), font, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
            if np.isfinite(p50):
                x1 = left + max(1, int(p50 * scale))
                cv2.rectangle(img, (left, yy), (x1, yy + bar_h), colour, -1)
                if np.isfinite(p99):
                    x2 = left + int(p99 * scale)
                    cv2.line(img, (x1, yy + bar_h // 2), (x2, yy + bar_h // 2), (0, 0, 0), 1)
                    cv2.line(img, (x2, yy + 3), (x2, yy + bar_h - 3), (0, 0, 0), 1)
                cv2.putText(
                    img, f"{p50:.2f}", (min(x1 + 4, width - 60), yy + bar_h - 5), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA
                )
            yy += bar_h + gap
        y += h
    cv2.line(img, (left, top), (left, height - 20), (0, 0, 0), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise ConfigError(f"cannot write plot {path}")
    return path


def result_document(bundle: Any, runs: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON document `bench --out` writes (schema `clipinspect.bench`, version 1).

    Args:
        bundle: the loaded bundle that was measured.
        runs: the run results.
        settings: the bench settings (iterations, warm-up, source, ...).

    Returns:
        JSON-ready data: schema, creation time, bundle identity, host, settings and runs.
    """
    return {
        "schema": "clipinspect.bench",
        "schema_version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundle": {
            "root": str(bundle.root),
            "model_id": bundle.manifest.model_id,
            "manifest_sha256": bundle.manifest_sha256,
            "image_size": list(bundle.manifest.preprocess.image_size),
        },
        "host": host_info(),
        "settings": dict(settings),
        "runs": [dict(r) for r in runs],
    }


def replace_backend(cfg: Any, spec: BenchSpec) -> Any:
    """`cfg` with its backend section set to `spec`'s backend and precision.

    Args:
        cfg: a RuntimeConfig.
        spec: the backend:precision to measure.

    Returns:
        A new RuntimeConfig; `cfg` is unchanged.
    """
    return dataclasses.replace(
        cfg, backend=dataclasses.replace(cfg.backend, name=spec.backend, precision=spec.precision)
    )
