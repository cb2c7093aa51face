"""Durable verdict throughput: how many verdicts/s the MQTT publisher stores durably (what the
pipeline may count as published) and delivers, per `spool_fsync` mode and group-commit size.

    python benchmarks/bench_spool.py [--seconds 3] [--rounds 2] [--dir DIR] [--json OUT]

For each spool_fsync (always, batch, never) and batch size (1 = one commit per verdict,
32 = group commit as Pipeline._publish does when verdicts queue up), one producer thread
calls publish_many() with real verdict payloads as fast as it can for --seconds, against a
real mosquitto on 127.0.0.1 (the publisher's sender delivers concurrently), then waits for
every PUBACK. Reported side by side in one run:

  stored/s     verdicts whose publish_many() returned, i.e. committed to sqlite (with
               `always`: fsynced) - the sustained rate at which verdicts can be counted
  delivered/s  stored verdicts / time until the last PUBACK (and delete from the spool)
  vs always/1  stored/s relative to one fsync per verdict

Also a "store only" row per mode (DurableQueue.append, no broker) to separate disk cost from
MQTT cost. --dir picks the file system measured (default: a temp dir); name its disk with
the figures, as well as the CPU (ISA) and whether the machine was shared.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

MODES = ("always", "batch", "never")
BATCHES = (1, 32)


def _verdicts(n: int, start: int) -> list[dict[str, Any]]:
    from edge_runtime.verdict import make_verdict

    return [
        make_verdict(
            frame_id=start + i,
            camera_serial="22000000",
            capture_ts_ns=(start + i) * 1_000_000,
            score=0.12,
            threshold=0.55,
            bundle_sha256="ab" * 32,
            model_id="run-5693a8fe",
            backend="trt",
            precision="fp16",
            latency_ms={"capture_wait": 0.4, "preprocess": 1.0, "inference": 9.8, "postprocess": 0.1, "queue": 0.2},
        )
        for i in range(n)
    ]


def _publisher_cell(uri: str, spool: Path, mode: str, batch: int, seconds: float) -> dict[str, Any]:
    from edge_runtime.publish import open_publisher

    pub = open_publisher(uri, {"spool_dir": str(spool), "spool_fsync": mode, "max_inflight": 64, "close_timeout_s": 30})
    try:
        deadline = time.monotonic() + 10
        while not pub.stats()["connected"] and time.monotonic() < deadline:
            time.sleep(0.01)
        template = _verdicts(batch, 0)
        stored = 0
        t0 = time.perf_counter()
        stop = t0 + seconds
        while time.perf_counter() < stop:
            pub.publish_many(template)
            stored += batch
        t_stored = time.perf_counter() - t0
        delivered = pub.flush(120)
        t_delivered = time.perf_counter() - t0
        st = pub.stats()
    finally:
        pub.close()
    return {
        "mode": mode,
        "batch": batch,
        "verdicts": stored,
        "stored_per_s": stored / t_stored,
        "delivered_per_s": st["acked"] / t_delivered if delivered else 0.0,
        "all_delivered": delivered,
        "dropped": st["dropped"],
    }


class _Frames:
    """A frame source as fast as the pipeline takes frames (tiny images): the publisher is
    the only real cost downstream of it."""

    uri = "bench://"

    def __init__(self) -> None:
        import numpy as np

        self.image = np.zeros((8, 8, 3), dtype=np.uint8)

    def open(self) -> None: ...

    def frames(self):
        from edge_runtime.frames import Frame

        i = 0
        while True:
            yield Frame(self.image, time.monotonic_ns(), i, "22000000", {"pixel_format": "RGB8"})
            i += 1

    def close(self) -> None: ...

    def stats(self) -> dict[str, int]:
        return {}


class _Scores:
    """Backend stand-in: a constant score at once (the model is not what is measured here)."""

    name = "bench"

    def infer(self, batch):
        from types import SimpleNamespace

        import numpy as np

        return SimpleNamespace(
            score=np.full(len(batch), 0.12, np.float32), anomaly_map=np.zeros((len(batch), 2, 2), np.float32)
        )

    def describe(self) -> dict[str, str]:
        return {"name": self.name}


def _pipeline_cell(uri: str, spool: Path, mode: str, seconds: float) -> dict[str, Any]:
    """The real Pipeline (its _publish drains whatever is queued into one publish_many:
    adaptive group commit) into the real MQTT publisher."""
    from edge_runtime.pipeline import Pipeline, PipelineOptions
    from edge_runtime.publish import open_publisher
    from edge_runtime.verdict import make_verdict

    def post(frame: Any, score: float, amap: Any, stages: Any) -> dict[str, Any]:
        return make_verdict(
            frame_id=frame.frame_id,
            camera_serial=frame.camera_serial,
            capture_ts_ns=frame.timestamp_ns,
            score=score,
            threshold=0.55,
            bundle_sha256="ab" * 32,
            model_id="run-5693a8fe",
            backend="trt",
            precision="fp16",
            latency_ms=stages,
        )

    pub = open_publisher(uri, {"spool_dir": str(spool), "spool_fsync": mode, "max_inflight": 64, "close_timeout_s": 30})
    try:
        options = PipelineOptions(drop_policy="block", inference_queue=8, stats_interval_s=0, flush_timeout_s=120)
        t0 = time.perf_counter()
        result = Pipeline(_Frames(), _Scores(), post, pub, lambda f: f.image, options, duration_s=seconds).run()
        t_all = time.perf_counter() - t0
        st = pub.stats()
    finally:
        pub.close()
    return {
        "mode": mode,
        "batch": "adaptive",
        "verdicts": result.published,
        "stored_per_s": result.published / seconds,
        "delivered_per_s": st["acked"] / t_all if result.flushed else 0.0,
        "all_delivered": result.flushed,
        "dropped": st["dropped"],
    }


def _store_cell(spool: Path, mode: str, batch: int, seconds: float) -> dict[str, Any]:
    from edge_runtime.publish.spool import DurableQueue

    payload = json.dumps(_verdicts(1, 0)[0], separators=(",", ":")).encode()
    q = DurableQueue(spool, fsync=mode)  # type: ignore[arg-type]
    items = [("clipinspect/st1/verdict", payload)] * batch
    n = 0
    t0 = last_delete = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        stored = q.append(items)
        n += len(stored)
        if time.perf_counter() - last_delete >= 0.1:  # as the sender deletes acknowledged ones
            q.remove_through(stored[-1].seq)
            last_delete = time.perf_counter()
    dt = time.perf_counter() - t0
    q.close()
    return {"mode": mode, "batch": batch, "verdicts": n, "stored_per_s": n / dt}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="producer time per cell")
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds over all cells, order reversed every other round (fsync times drift on a shared disk)",
    )
    p.add_argument("--dir", type=Path, help="where the spools go (the disk being measured)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from edge_runtime.publish.broker import EmbeddedBroker

    base = Path(tempfile.mkdtemp(prefix="bench-spool-", dir=args.dir))
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    with EmbeddedBroker("mosquitto") as broker:
        uri = f"{broker.uri}/bench"
        cells: list[tuple[str, str, Any, Any]] = []
        for batch in BATCHES:
            for mode in MODES:
                cells.append(("store only", mode, batch, lambda d, m=mode, b=batch: _store_cell(d, m, b, args.seconds)))
                cells.append(
                    (
                        "publisher+mosquitto",
                        mode,
                        batch,
                        lambda d, m=mode, b=batch: _publisher_cell(uri, d, m, b, args.seconds),
                    )
                )
        for mode in MODES:
            cells.append(
                ("pipeline+mosquitto", mode, "adaptive", lambda d, m=mode: _pipeline_cell(uri, d, m, args.seconds))
            )
        for r in range(args.rounds):
            for i, (kind, mode, batch, fn) in enumerate(cells if r % 2 == 0 else cells[::-1]):
                runs.setdefault((kind, mode, str(batch)), []).append({"kind": kind, **fn(base / f"r{r}-{i}")})
    rows = [_summarise(key, got) for key, got in runs.items()]
    ref = {r["kind"]: r["stored_per_s"] for r in rows if r["mode"] == "always" and r["batch"] in ("1", "adaptive")}
    print(
        f"CPU {platform.machine()} ({platform.processor() or 'unknown'}), spool on {base}; {args.seconds:g} s per cell, "
        f"median of {args.rounds} round(s) [min-max]"
    )
    print(
        f"{'kind':<20} {'spool_fsync':<11} {'batch':>8} {'stored/s':>10} {'[min-max]':>17} {'delivered/s':>11} {'vs always':>9}"
    )
    for r in rows:
        delivered = f"{r['delivered_per_s']:>11.0f}" if "delivered_per_s" in r else f"{'-':>11}"
        spread = f"[{r['stored_min']:.0f}-{r['stored_max']:.0f}]"
        print(
            f"{r['kind']:<20} {r['mode']:<11} {r['batch']:>8} {r['stored_per_s']:>10.0f} {spread:>17} {delivered} {r['stored_per_s'] / ref[r['kind']]:>8.1f}x"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "runs": [x for got in runs.values() for x in got]}, indent=2))
    bad = [
        x
        for got in runs.values()
        for x in got
        if x["kind"] != "store only" and (not x["all_delivered"] or x["dropped"])
    ]
    if bad:
        print(f"NOT ALL DELIVERED: {bad}", file=sys.stderr)
        return 1
    import shutil

    shutil.rmtree(base, ignore_errors=True)
    return 0


def _summarise(key: tuple[str, str, str], got: list[dict[str, Any]]) -> dict[str, Any]:
    import statistics

    stored = [g["stored_per_s"] for g in got]
    row: dict[str, Any] = {
        "kind": key[0],
        "mode": key[1],
        "batch": key[2],
        "stored_per_s": statistics.median(stored),
        "stored_min": min(stored),
        "stored_max": max(stored),
    }
    if "delivered_per_s" in got[0]:
        row["delivered_per_s"] = statistics.median(g["delivered_per_s"] for g in got)
    return row


if __name__ == "__main__":
    raise SystemExit(main())
