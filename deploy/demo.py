"""`clipinspect demo`: the whole chain on embedded defaults, as a newcomer's first command.

synthetic data -> tiny CLIP (stand-in) -> LoRA training -> eval -> merge -> ONNX bundle ->
parity check -> INT8 Q/DQ -> `run` from a replayed source to an embedded MQTT broker, read
back by a subscriber -> bench table -> summary.

Every step goes through the same `clipinspect` subcommand a user would type (in-process, so
torch is imported once), so the demo exercises the real CLI surface, not a private shortcut.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from edge_runtime.errors import CheckFailed, ClipInspectError

log = logging.getLogger(__name__)


@dataclass
class DemoOptions:
    out: Path
    clip: str | None = None  # None: build the tiny random stand-in
    epochs: int = 2
    frames: int = 24
    seed: int = 0
    source: str = "auto"  # auto | gentl | folder
    keep: bool = False
    bench_iters: int = 30


@dataclass
class StepResult:
    name: str
    seconds: float
    detail: str = ""


@dataclass
class DemoReport:
    steps: list[StepResult] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    figures: dict[str, object] = field(default_factory=dict)


def _cli(argv: Sequence[str]) -> None:
    """Run one clipinspect subcommand in-process; a non-zero exit stops the demo."""
    from edge_runtime.cli import main

    code = main(list(argv))
    if code != 0:
        raise CheckFailed(f"demo step 'clipinspect {' '.join(argv)}' exited {code}")


class _Steps:
    def __init__(self, total: int, report: DemoReport) -> None:
        self.total, self.n, self.report = total, 0, report

    def run(self, name: str, fn: Callable[[], str | None]) -> None:
        self.n += 1
        print(f"\n[{self.n}/{self.total}] {name}", flush=True)
        t0 = time.perf_counter()
        detail = fn() or ""
        dt = time.perf_counter() - t0
        self.report.steps.append(StepResult(name, dt, detail))
        print(f"      done in {dt:.1f} s{(' — ' + detail) if detail else ''}", flush=True)


class VerdictSubscriber:
    """A plain paho-mqtt 2 subscriber: what a plant's MES would run to receive verdicts."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.received: list[dict] = []
        self.status: list[dict] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"clipinspect-demo-sub-{time.time_ns()}")
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise CheckFailed(f"demo subscriber could not subscribe to {topic} on {host}:{port}")

    def _on_message(self, client, userdata, msg) -> None:
        payload = json.loads(msg.payload)
        with self._lock:
            (self.status if msg.topic.endswith("/status") else self.received).append(payload)

    def wait_for(self, n: int, timeout_s: float) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= n:
                    break
            time.sleep(0.05)
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _replay_folder(data: Path, category: str, out: Path) -> dict[str, int]:
    """Interleave a held-out category's test images into one folder, named so that name
    order is replay order; returns {file name: label} to score the device's verdicts."""
    from train.data import load_samples

    samples = load_samples(data, splits=("test",), categories=[category])
    good = [s for s in samples if s.label == 0]
    bad = [s for s in samples if s.label == 1]
    order = []
    while good or bad:
        for pool in (good, bad):
            if pool:
                order.append(pool.pop(0))
    out.mkdir(parents=True, exist_ok=True)
    labels = {}
    for i, s in enumerate(order):
        name = f"{i:04d}_{s.defect}_{s.image_path.name}"
        shutil.copyfile(s.image_path, out / name)
        labels[name] = s.label
    return labels


def run_demo(opts: DemoOptions) -> DemoReport:
    from edge_runtime.publish.broker import EmbeddedBroker

    out = opts.out.resolve()
    if out.exists() and not opts.keep:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    data, clip_dir, run_dir = out / "data", out / "tiny-clip", out / "run"
    merged, bundle, replay = out / "merged", out / "bundle", out / "replay"
    report = DemoReport()
    steps = _Steps(11, report)
    categories: list[str] = []
    clip = opts.clip or str(clip_dir)

    def synth() -> str:
        _cli(["synth-data", str(data), "--seed", str(opts.seed), "--categories", "4"])
        categories.extend(sorted(p.name for p in data.iterdir() if p.is_dir()))
        return f"{len(categories)} categories: {', '.join(categories)}; held out: {categories[-1]}"

    def tiny_clip() -> str:
        if opts.clip:
            return f"using --clip {opts.clip}"
        _cli(["make-tiny-clip", str(clip_dir), "--seed", str(opts.seed)])
        return "TINY RANDOM CLIP: a stand-in so the pipeline runs offline; pass --clip for real weights"

    holdout = lambda: categories[-1]  # noqa: E731

    def train() -> str:
        extra = [] if opts.clip else ["--set", "optim.threads=1"]  # the tiny model's ops are too small to thread
        _cli(["train", "--data", str(data), "--clip", clip, "--out", str(run_dir), "--epochs", str(opts.epochs),
              "--holdout", holdout(), "--set", f"optim.seed={opts.seed}", *extra])
        return f"run folder {run_dir}"

    def evaluate() -> str:
        _cli(["eval", "--run", str(run_dir), "--data", str(data), "--heatmaps", "6"])
        metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
        report.figures["eval_mean"] = metrics["mean"]
        report.figures["eval_holdout"] = metrics["per_category"].get(holdout())
        report.artifacts["eval"] = str(run_dir / "eval")
        return f"threshold {json.loads((run_dir / 'threshold.json').read_text())['value']:.4f} (F1-max)"

    def merge_export() -> str:
        _cli(["merge", "--run", str(run_dir), "--out", str(merged)])
        _cli(["export", "--merged", str(merged), "--out", str(bundle), "--force"])
        report.artifacts["merged model"] = str(merged)
        report.artifacts["bundle"] = str(bundle)
        return "one ONNX graph: uint8 image -> score, anomaly map"

    def parity() -> str:
        _cli(["verify-bundle", "--bundle", str(bundle), "--images", str(data / holdout() / "test"), "--max-images", "8"])
        return "torch reference == ONNX Runtime within 1e-4"

    def calibrate() -> str:
        _cli(["calibrate", "--bundle", str(bundle), "--images", str(data / categories[0]), "--num", "8", "--seed", str(opts.seed)])
        precision_json = out / "precision_report.json"
        _cli(["precision-report", "--bundle", str(bundle), "--images", str(data / holdout()), "--json", str(precision_json),
              "--precisions", "fp32,int8"])
        report.artifacts["precision report"] = str(precision_json)
        return "model.int8.onnx (Q/DQ) added to the bundle"

    labels: dict[str, int] = {}
    state: dict[str, object] = {}

    def broker_up() -> str:
        broker = EmbeddedBroker("auto").start()
        state["broker"] = broker
        state["sub"] = VerdictSubscriber(broker.host, broker.port, "clipinspect/demo/#")
        return f"{broker.kind} on {broker.host}:{broker.port}, subscriber on clipinspect/demo/#"

    def run_line() -> str:
        labels.update(_replay_folder(data, holdout(), replay))
        broker, sub = state["broker"], state["sub"]
        summary = out / "run_summary.json"
        _cli(["run", "--bundle", str(bundle), "--source", f"folder://{replay}?loop=0",
              "--publish", f"mqtt://{broker.host}:{broker.port}/clipinspect/demo",
              # A replay must not drop frames (a camera would use the default 'newest').
              "--set", "pipeline.drop_policy=block",
              "--max-frames", str(len(labels)), "--summary-json", str(summary)])
        got = sub.wait_for(len(labels), timeout_s=20)
        names = sorted(labels)
        if len(got) != len(labels):
            raise CheckFailed(f"subscriber received {len(got)} verdicts, expected {len(labels)}")
        frame_ids = [v["frame_id"] for v in got]
        if frame_ids != sorted(frame_ids):
            raise CheckFailed("verdicts arrived out of order")
        correct = sum((v["verdict"] == "NG") == bool(labels[names[v["frame_id"]]]) for v in got)
        report.figures["verdicts_received"] = len(got)
        report.figures["verdict_accuracy_holdout"] = correct / len(got)
        report.artifacts["run summary"] = str(summary)
        detail = f"{len(got)}/{len(labels)} verdicts received over MQTT, in order; {correct} match the labels"
        from edge_runtime.sources.gentl import simulator_producer

        viky = simulator_producer() if opts.source in ("auto", "gentl") else None
        if opts.source == "gentl" and viky is None:
            raise CheckFailed("--source gentl needs the genicam wheel (viky.cti) and harvesters")
        if viky is not None:
            before = len(sub.received)
            _cli(["run", "--bundle", str(bundle), "--source", f"gentl://{viky}?serial=1",
                  "--publish", f"mqtt://{broker.host}:{broker.port}/clipinspect/demo/gentl",
                  "--set", "source.options.pixel_format=Mono8", "--max-frames", "8"])
            n = len(sub.wait_for(before + 8, timeout_s=20)) - before
            report.figures["gentl_verdicts"] = n
            detail += f"; GenICam simulator (viky.cti): {n}/8 verdicts"
        return detail

    def bench() -> str:
        bench_dir = out / "bench"
        _cli(["bench", "--bundle", str(bundle), "--compare", "ort-cpu:fp32,ort-cpu:int8",
              "--iterations", str(opts.bench_iters), "--frames", str(opts.bench_iters), "--warmup", "5",
              "--out", str(bench_dir), "--no-progress"])
        report.artifacts["bench"] = str(bench_dir / "bench.json")
        report.artifacts["bench plot"] = str(bench_dir / "bench.png")
        return "per-stage latency table above"

    try:
        steps.run("synthetic data set (scratch, contamination, crack; with masks)", synth)
        steps.run("CLIP", tiny_clip)
        steps.run(f"LoRA training, {opts.epochs} epochs", train)
        steps.run("evaluation (AnomalyCLIP table, heatmaps, threshold)", evaluate)
        steps.run("merge adapters + export the ONNX bundle", merge_export)
        steps.run("parity: training-side score vs device score", parity)
        steps.run("INT8 Q/DQ calibration + precision report", calibrate)
        steps.run("embedded MQTT broker + verdict subscriber", broker_up)
        steps.run("clipinspect run: replayed line -> verdicts over MQTT", run_line)
        steps.run("clipinspect bench: model-only vs end-to-end, fp32 vs int8", bench)
        steps.run("summary", lambda: None)
    finally:
        if "sub" in state:
            state["sub"].close()
        if "broker" in state:
            state["broker"].close()
    return report


def format_report(report: DemoReport) -> str:
    lines = ["", "clipinspect demo — summary", "=" * 60]
    total = sum(s.seconds for s in report.steps)
    for s in report.steps:
        lines.append(f"  {s.seconds:7.1f} s  {s.name}")
    lines.append(f"  {total:7.1f} s  total")
    lines.append("figures (tiny random CLIP: they exercise the pipeline, they do not measure accuracy):")
    mean = report.figures.get("eval_mean") or {}
    if mean:
        lines.append("  eval mean: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items() if isinstance(v, (int, float))))
    for key in ("verdicts_received", "verdict_accuracy_holdout", "gentl_verdicts"):
        if key in report.figures:
            v = report.figures[key]
            lines.append(f"  {key}: {v:.3f}" if isinstance(v, float) else f"  {key}: {v}")
    lines.append("artifacts:")
    lines.extend(f"  {k:18s} {v}" for k, v in report.artifacts.items())
    lines.append("next: real weights with `clipinspect demo --clip openai/clip-vit-base-patch16` (hub id or local folder)")
    return "\n".join(lines)
