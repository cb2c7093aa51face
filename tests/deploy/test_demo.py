"""The README's main command, end to end (slow: trains, exports, runs a broker)."""

from __future__ import annotations

import json

import pytest

from edge_runtime.cli import main


@pytest.mark.slow
@pytest.mark.broker
def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--bench-iters", "10", "--source", "folder"]) == 0
    text = capsys.readouterr().out
    assert "clipinspect demo — summary" in text
    assert "TINY RANDOM CLIP" in text  # says plainly that the model is a stand-in
    # Every verdict the run published reached the subscriber.
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["published"] == summary["captured"] > 0
    assert f"verdicts_received: {summary['published']}" in text
    bench = json.loads((out / "bench" / "bench.json").read_text())
    assert {(r["backend"], r["precision"]) for r in bench["runs"]} >= {("ort-cpu", "fp32"), ("ort-cpu", "int8")}
    assert (out / "bench" / "bench.png").stat().st_size > 0
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert "model.int8.onnx" in manifest["files"]


def test_demo_bad_option_is_one_line(capsys):
    assert main(["demo", "--epochs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--epochs" in err[0]
