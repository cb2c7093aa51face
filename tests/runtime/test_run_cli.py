"""`clipinspect run` end to end with the real sources and publishers, and SIGTERM draining."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.backends import make_backend
from edge_runtime.cli import main
from edge_runtime.commands.run import format_summary
from edge_runtime.imageio import read_rgb
from edge_runtime.pipeline import PipelineResult
from edge_runtime.preprocess import prepare
from edge_runtime.verdict import validate_verdict
from tests.runtime.helpers import BLOCK, run_argv, run_cmd, sets

REPO = Path(__file__).resolve().parents[2]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    return folder


def test_run_folder_to_jsonl_scores_match_the_backend(toy_bundle, image_folder, tmp_path, capsys):
    out = tmp_path / "v.jsonl"
    hm = tmp_path / "heatmaps"
    rc = main(
        run_argv(
            toy_bundle.root,
            f"folder://{image_folder}",
            f"jsonl://{out}",
            "--threshold",
            "0.6",
            *sets(f"heatmaps.dir={hm}", "heatmaps.max_files=2", BLOCK),
            "--summary-json",
            str(tmp_path / "summary.json"),
        )
    )
    assert rc == 0
    verdicts = _read_jsonl(out)
    assert [v["frame_id"] for v in verdicts] == list(range(6))
    backend = make_backend("ort-cpu")
    backend.load(toy_bundle, "fp32")
    files = sorted(image_folder.glob("*.png"))
    for v, f in zip(verdicts, files):
        assert validate_verdict(v) == []
        x = prepare(read_rgb(f), toy_bundle.manifest.preprocess.image_size)
        assert v["score"] == pytest.approx(float(backend.infer(x[None]).score[0]), abs=1e-5)
        assert v["threshold"] == 0.6
        assert (v["heatmap"] is not None) == (v["verdict"] == "NG")
    ng = sum(v["verdict"] == "NG" for v in verdicts)
    assert len(list(hm.glob("*.jpg"))) == min(ng, 2)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["published"] == 6 and summary["backend"]["provider"] == "CPUExecutionProvider"
    assert "captured 6, inferred 6, published 6" in capsys.readouterr().out


def test_run_real_images(toy_bundle, mvtec_root, tmp_path):
    out = tmp_path / "v.jsonl"
    folder = mvtec_root / "bottle" / "test" / "broken_large"
    assert (
        main(run_argv(toy_bundle.root, f"folder://{folder}", f"jsonl://{out}", "--max-frames", "3", *sets(BLOCK))) == 0
    )
    verdicts = _read_jsonl(out)
    assert len(verdicts) == 3 and all(validate_verdict(v) == [] for v in verdicts)


def test_run_config_errors_are_one_line(toy_bundle, tmp_path, capsys):
    rc = main(run_argv(toy_bundle.root, "synthetic://", "jsonl://x.jsonl", "--set", "pipeline.drop_polcy=block"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pipeline.drop_polcy" in err[0] and "did you mean 'drop_policy'" in err[0]
    rc = main(["run", "--bundle", str(tmp_path / "nope"), "--source", "synthetic://", "--publish", "stdout://"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "bundle folder not found" in err[0]
    rc = main(["run", "--bundle", str(toy_bundle.root), "--publish", "stdout://"])
    assert rc == 2 and "no frame source" in capsys.readouterr().err


def test_run_synthetic_max_frames_newest_policy(toy_bundle, tmp_path, capsys):
    out = tmp_path / "v.jsonl"
    rc = main(run_argv(toy_bundle.root, "synthetic://?width=64&height=64", f"jsonl://{out}", "--max-frames", "20"))
    assert rc == 0
    summary = capsys.readouterr().out.splitlines()
    assert summary[0].startswith("frames: captured 20") and not any(line.startswith("camera:") for line in summary)
    ids = [v["frame_id"] for v in _read_jsonl(out)]
    # Under 'newest' a frame may be dropped, never reordered or duplicated.
    assert ids == sorted(set(ids)) and 0 < len(ids) <= 20


def test_summary_shows_the_camera_counters_and_why_one_was_not_counted():
    result = PipelineResult(
        captured=10,
        inferred=10,
        published=10,
        dropped=0,
        ok=10,
        ng=0,
        wall_s=1.0,
        fps=10.0,
        stop_reason="max_frames",
        flushed=True,
        stats={},
        counters={},
    )
    counted = {
        "delivered": 10,
        "trigger_edges": 16,
        "missed_triggers": 6,
        "missed_triggers_source": "device_counters",
        "stream_lost": 0,
        "stream_dropped": None,
    }
    lines = format_summary(result, counted).splitlines()
    assert (
        lines[1] == "camera: trigger edges 16, missed triggers 6 (device_counters), stream lost 0, stream dropped n/a"
    )
    free_run = {
        **counted,
        "trigger_edges": None,
        "missed_triggers": None,
        "missed_triggers_source": "disabled",
        "stream_dropped": 2,
    }
    lines = format_summary(result, free_run).splitlines()
    assert (
        lines[1]
        == "camera: trigger edges n/a (disabled), missed triggers n/a (disabled), stream lost 0, stream dropped 2"
    )
    assert len(format_summary(result, {"delivered": 10, "timeouts": 0}).splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_and_exits_0(toy_bundle, tmp_path, sig):
    out = tmp_path / "v.jsonl"
    summary = tmp_path / "summary.json"
    source = "synthetic://?width=320&height=240&fps=50"
    options = sets(BLOCK, "pipeline.inference_queue=8")
    cmd = run_cmd(toy_bundle.root, source, f"jsonl://{out}", *options, "--summary-json", str(summary))
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 10):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    s = json.loads(summary.read_text())
    verdicts = _read_jsonl(out)
    assert s["stop_reason"] == sig.name
    # Every frame captured was inferred, and every inferred frame's verdict is in the file.
    assert s["captured"] == s["inferred"] == s["published"] == len(verdicts) >= 10
    assert [v["frame_id"] for v in verdicts] == list(range(len(verdicts)))
    assert "Traceback" not in stderr


@pytest.mark.broker
def test_run_publishes_every_verdict_over_mqtt(toy_bundle, mqtt_broker, mqtt_subscriber, tmp_path):
    sub = mqtt_subscriber(mqtt_broker, "line1/#")
    sub.wait_subscribed()
    rc = main(
        run_argv(
            toy_bundle.root,
            "synthetic://?width=64&height=64&count=8",
            f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}/line1",
            *sets(BLOCK),
        )
    )
    assert rc == 0
    assert sub.wait_for(lambda msgs: len([m for m in msgs if m.topic.endswith("verdict")]) >= 8, 10)
    verdicts = sub.payloads("verdict")
    assert sorted(v["frame_id"] for v in verdicts) == list(range(8))
    assert all(validate_verdict(v) == [] for v in verdicts)
