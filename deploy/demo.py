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
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.errors import CheckFailed

log = logging.getLogger(__name__)


@dataclass
class DemoOptions:
    """What `clipinspect demo` was asked for (see deploy/commands/demo.py for the flags)."""

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
    """One demo step: its name, how long it took and what it reported."""

    name: str
    seconds: float
    detail: str = ""


@dataclass
class DemoReport:
    """What the demo did and made: steps, artifact paths and headline figures."""

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
        """Run step `fn` under a numbered heading, timing it into the report."""
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
        """The verdicts received once `n` have arrived or `timeout_s` has passed, whichever is first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= n:
                    break
            time.sleep(0.05)
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        """Stop the network loop and disconnect."""
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
    """Run the whole chain (data, training, eval, export, parity, INT8, MQTT run, bench) into
    `opts.out`, each step through the real CLI; returns what each step took and produced.

    Raises:
        CheckFailed: a step's command exited non-zero, or the verdicts read back over MQTT
            are missing, out of order or (with --source gentl) the simulator is unavailable.
    """
    out = opts.out.resolve()
    if out.exists() and not opts.keep:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    demo = _Demo(opts, out)
    steps = _Steps(11, demo.report)
    try:
        steps.run("synthetic data set (scratch, contamination, crack; with masks)", demo.synth)
        steps.run("CLIP", demo.tiny_clip)
        steps.run(f"LoRA training, {opts.epochs} epochs", demo.train)
        steps.run("evaluation (AnomalyCLIP table, heatmaps, threshold)", demo.evaluate)
        steps.run("merge adapters + export the ONNX bundle", demo.merge_export)
        steps.run("parity: training-side score vs device score", demo.parity)
        steps.run("INT8 Q/DQ calibration + precision report", demo.calibrate)
        steps.run("embedded MQTT broker + verdict subscriber", demo.broker_up)
        steps.run("clipinspect run: replayed line -> verdicts over MQTT", demo.run_line)
        steps.run("clipinspect bench: model-only vs end-to-end, fp32 vs int8", demo.bench)
        steps.run("summary", lambda: None)
    finally:
        demo.close()
    return demo.report


class _Demo:
    """The demo's steps, one method each; they share the working folder's paths and the report."""

    def __init__(self, opts: DemoOptions, out: Path) -> None:
        self.opts, self.out = opts, out
        self.data, self.clip_dir, self.run_dir = out / "data", out / "tiny-clip", out / "run"
        self.merged, self.bundle, self.replay = out / "merged", out / "bundle", out / "replay"
        self.clip = opts.clip or str(self.clip_dir)
        self.report = DemoReport()
        self.categories: list[str] = []
        self.broker = None
        self.sub: VerdictSubscriber | None = None

    @property
    def holdout(self) -> str:
        """The category training never sees (the last one): parity, the run and the report use it."""
        return self.categories[-1]

    def synth(self) -> str:
        """Write the synthetic data set (4 categories, the last held out)."""
        _cli(["synth-data", str(self.data), "--seed", str(self.opts.seed), "--categories", "4"])
        self.categories.extend(sorted(p.name for p in self.data.iterdir() if p.is_dir()))
        return f"{len(self.categories)} categories: {', '.join(self.categories)}; held out: {self.holdout}"

    def tiny_clip(self) -> str:
        """Write the tiny random CLIP stand-in, unless --clip names real weights."""
        if self.opts.clip:
            return f"using --clip {self.opts.clip}"
        _cli(["make-tiny-clip", str(self.clip_dir), "--seed", str(self.opts.seed)])
        return "TINY RANDOM CLIP: a stand-in so the pipeline runs offline; pass --clip for real weights"

    def train(self) -> str:
        """LoRA training on every category but the held-out one."""
        extra = [] if self.opts.clip else ["--set", "optim.threads=1"]  # the tiny model's ops are too small to thread
        _cli(
            [
                "train",
                "--data",
                str(self.data),
                "--clip",
                self.clip,
                "--out",
                str(self.run_dir),
                "--epochs",
                str(self.opts.epochs),
                "--holdout",
                self.holdout,
                "--set",
                f"optim.seed={self.opts.seed}",
                *extra,
            ]
        )
        return f"run folder {self.run_dir}"

    def evaluate(self) -> str:
        """Eval: the metrics table, heatmaps and the F1-max threshold."""
        run_dir = self.run_dir
        _cli(["eval", "--run", str(run_dir), "--data", str(self.data), "--heatmaps", "6"])
        metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
        self.report.figures["eval_mean"] = metrics["mean"]
        self.report.figures["eval_holdout"] = metrics["per_category"].get(self.holdout)
        self.report.artifacts["eval"] = str(run_dir / "eval")
        return f"threshold {json.loads((run_dir / 'threshold.json').read_text())['value']:.4f} (F1-max)"

    def merge_export(self) -> str:
        """Merge the adapters into CLIP and export the ONNX bundle."""
        _cli(["merge", "--run", str(self.run_dir), "--out", str(self.merged)])
        _cli(["export", "--merged", str(self.merged), "--out", str(self.bundle), "--force"])
        self.report.artifacts["merged model"] = str(self.merged)
        self.report.artifacts["bundle"] = str(self.bundle)
        return "one ONNX graph: uint8 image -> score, anomaly map"

    def parity(self) -> str:
        """verify-bundle: the torch reference against the device's ONNX Runtime on held-out images."""
        _cli(
            [
                "verify-bundle",
                "--bundle",
                str(self.bundle),
                "--images",
                str(self.data / self.holdout / "test"),
                "--max-images",
                "8",
            ]
        )
        return "torch reference == ONNX Runtime within 1e-4"

    def calibrate(self) -> str:
        """INT8 Q/DQ calibration, then the fp32-vs-int8 precision report."""
        _cli(
            [
                "calibrate",
                "--bundle",
                str(self.bundle),
                "--images",
                str(self.data / self.categories[0]),
                "--num",
                "8",
                "--seed",
                str(self.opts.seed),
            ]
        )
        precision_json = self.out / "precision_report.json"
        _cli(
            [
                "precision-report",
                "--bundle",
                str(self.bundle),
                "--images",
                str(self.data / self.holdout),
                "--json",
                str(precision_json),
                "--precisions",
                "fp32,int8",
            ]
        )
        self.report.artifacts["precision report"] = str(precision_json)
        return "model.int8.onnx (Q/DQ) added to the bundle"

    def broker_up(self) -> str:
        """Start the embedded MQTT broker and the verdict subscriber."""
        from edge_runtime.publish.broker import EmbeddedBroker

        self.broker = broker = EmbeddedBroker("auto").start()
        self.sub = VerdictSubscriber(broker.host, broker.port, "clipinspect/demo/#")
        return f"{broker.kind} on {broker.host}:{broker.port}, subscriber on clipinspect/demo/#"

    def run_line(self) -> str:
        """`run` on the replayed line (and the GenICam simulator when installed), read back over MQTT."""
        detail = self._replayed_line()
        gentl = self._gentl_line()
        return detail + (f"; GenICam simulator (viky.cti): {gentl}/8 verdicts" if gentl is not None else "")

    def _replayed_line(self) -> str:
        """`run` on the held-out images replayed from a folder; every verdict must arrive, in order."""
        labels = _replay_folder(self.data, self.holdout, self.replay)
        summary = self.out / "run_summary.json"
        _cli(
            [
                "run",
                "--bundle",
                str(self.bundle),
                "--source",
                f"folder://{self.replay}?loop=0",
                "--publish",
                f"mqtt://{self.broker.host}:{self.broker.port}/clipinspect/demo",
                # A replay must not drop frames (a camera would use the default 'newest').
                "--set",
                "pipeline.drop_policy=block",
                "--max-frames",
                str(len(labels)),
                "--summary-json",
                str(summary),
            ]
        )
        got = self.sub.wait_for(len(labels), timeout_s=20)
        correct = _score_verdicts(got, labels)
        self.report.figures["verdicts_received"] = len(got)
        self.report.figures["verdict_accuracy_holdout"] = correct / len(got)
        self.report.artifacts["run summary"] = str(summary)
        return f"{len(got)}/{len(labels)} verdicts received over MQTT, in order; {correct} match the labels"

    def _gentl_line(self) -> int | None:
        """`run` on the GenICam simulator when it is installed: verdicts received (None: not run)."""
        from edge_runtime.sources.gentl import simulator_producer

        viky = simulator_producer() if self.opts.source in ("auto", "gentl") else None
        if self.opts.source == "gentl" and viky is None:
            raise CheckFailed("--source gentl needs the genicam wheel (viky.cti) and harvesters")
        if viky is None:
            return None
        before = len(self.sub.received)
        _cli(
            [
                "run",
                "--bundle",
                str(self.bundle),
                "--source",
                f"gentl://{viky}?serial=1",
                "--publish",
                f"mqtt://{self.broker.host}:{self.broker.port}/clipinspect/demo/gentl",
                "--set",
                "source.options.pixel_format=Mono8",
                "--max-frames",
                "8",
            ]
        )
        n = len(self.sub.wait_for(before + 8, timeout_s=20)) - before
        self.report.figures["gentl_verdicts"] = n
        return n

    def bench(self) -> str:
        """`bench --compare ort-cpu:fp32,ort-cpu:int8` into the demo folder."""
        bench_dir = self.out / "bench"
        _cli(
            [
                "bench",
                "--bundle",
                str(self.bundle),
                "--compare",
                "ort-cpu:fp32,ort-cpu:int8",
                "--iterations",
                str(self.opts.bench_iters),
                "--frames",
                str(self.opts.bench_iters),
                "--warmup",
                "5",
                "--out",
                str(bench_dir),
                "--no-progress",
            ]
        )
        self.report.artifacts["bench"] = str(bench_dir / "bench.json")
        self.report.artifacts["bench plot"] = str(bench_dir / "bench.png")
        return "per-stage latency table above"

    def close(self) -> None:
        """Stop the subscriber, then the broker (whichever were started)."""
        if self.sub is not None:
            self.sub.close()
        if self.broker is not None:
            self.broker.close()


def _score_verdicts(got: list[dict], labels: dict[str, int]) -> int:
    """How many verdicts match the replayed images' labels; CheckFailed if any is missing or
    out of order (frame ids index the replay folder's names in sorted order)."""
    if len(got) != len(labels):
        raise CheckFailed(f"subscriber received {len(got)} verdicts, expected {len(labels)}")
    frame_ids = [v["frame_id"] for v in got]
    if frame_ids != sorted(frame_ids):
        raise CheckFailed("verdicts arrived out of order")
    names = sorted(labels)
    return sum((v["verdict"] == "NG") == bool(labels[names[v["frame_id"]]]) for v in got)


def format_report(report: DemoReport) -> str:
    """The closing summary: time per step, the figures and where the artifacts are."""
    lines = ["", "clipinspect demo — summary", "=" * 60]
    total = sum(s.seconds for s in report.steps)
    for s in report.steps:
        lines.append(f"  {s.seconds:7.1f} s  {s.name}")
    lines.append(f"  {total:7.1f} s  total")
    lines.append("figures (tiny random CLIP: they exercise the pipeline, they do not measure accuracy):")
    mean = report.figures.get("eval_mean") or {}
    if mean:
        lines.append(
            "  eval mean: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items() if isinstance(v, (int, float)))
        )
    for key in ("verdicts_received", "verdict_accuracy_holdout", "gentl_verdicts"):
        if key in report.figures:
            v = report.figures[key]
            lines.append(f"  {key}: {v:.3f}" if isinstance(v, float) else f"  {key}: {v}")
    lines.append("artifacts:")
    lines.extend(f"  {k:18s} {v}" for k, v in report.artifacts.items())
    lines.append(
        "next: real weights with `clipinspect demo --clip openai/clip-vit-base-patch16` (hub id or local folder)"
    )
    return "\n".join(lines)
