"""Soak in CI (issue 9 item 4): `clipinspect run --duration 60` as a real subprocess; RSS must
not grow by 5 % or more after warm-up, fds and threads stay flat, nothing is lost."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.runtime.helpers import run_cmd, sets

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sixty_second_soak_has_flat_memory_and_loses_nothing(toy_bundle, tmp_path):
    out, summary = tmp_path / "v.jsonl", tmp_path / "summary.json"
    options = sets("pipeline.stats_interval_s=5", "pipeline.process_warmup_s=20", "backend.intra_op_threads=1")
    source = "synthetic://?width=320&height=240&fps=30"
    cmd = run_cmd(
        toy_bundle.root, source, f"jsonl://{out}", "--duration", "60", *options, "--summary-json", str(summary)
    )
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=180, env=os.environ | {"PYTHONUNBUFFERED": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(summary.read_text())
    p = s["process"]
    assert p["warm"] is not None and len(p["history"]) >= 10  # sampled every 5 s
    growth = p["rss_growth_after_warmup_pct"]
    print(
        f"\nsoak 60 s: RSS {p['start']['rss_mb']} -> warm {p['warm']['rss_mb']} -> end {p['end']['rss_mb']} MB "
        f"({growth:+.2f} % after warm-up), fds {p['warm']['fds']} -> {p['end']['fds']}, threads max {p['max_threads']}, "
        f"records {s['records']['total']}"
    )
    assert growth < 5.0
    assert p["end"]["fds"] <= p["warm"]["fds"] + 2 and p["max_threads"] <= p["warm"]["threads"] + 2
    lines = out.read_text().splitlines()
    assert len(lines) == s["records"]["total"] > 1000  # ~30 fps for 60 s, every record written
    ids = [json.loads(line)["frame_id"] for line in lines]
    assert ids == list(range(len(ids)))  # no gap: nothing lost
    assert "rss" in proc.stderr + proc.stdout and "fds" in proc.stderr + proc.stdout  # periodic stats line
