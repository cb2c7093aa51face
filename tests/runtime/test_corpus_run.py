"""1,000+ odd files through `clipinspect run` (folder:// -> toy bundle -> jsonl://), one real
subprocess: 0 crashes, every good file judged, every bad one recorded with its reason."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from edge_runtime.verdict import validate_verdict
from tests.runtime.helpers import BLOCK, run_cmd, sets
from tests.runtime.odd_corpus import KINDS, MAX_PIXELS, write_corpus

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_odd_corpus_through_clipinspect_run(toy_bundle, tmp_path):
    files = write_corpus(tmp_path / "corpus", copies=36)  # 1 + 36 * 29 = 1045 files
    assert len(files) >= 1000
    out, summary = tmp_path / "v.jsonl", tmp_path / "summary.json"
    options = sets(BLOCK, f"source.options.max_pixels={MAX_PIXELS}", "backend.intra_op_threads=1")
    cmd = run_cmd(
        toy_bundle.root, f"folder://{tmp_path / 'corpus'}", f"jsonl://{out}", *options, "--summary-json", str(summary)
    )
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ | {"PYTHONUNBUFFERED": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    # One record per file, in name order: frame id i is file i.
    assert [r["frame_id"] for r in records] == list(range(len(files)))
    assert all(validate_verdict(r) == [] for r in records)
    by_kind: dict[str, Counter] = {}
    for (name, kind), r in zip(files, records):
        outcome = "judged" if r["verdict"] in ("OK", "NG") else r["reason"]
        by_kind.setdefault(kind, Counter())[outcome] += 1
        expected = KINDS[kind][1]
        if expected == "any":
            assert outcome in ("judged", "undecodable", "odd_size"), (name, r)
        else:
            assert outcome == expected, (name, r)
        if outcome != "judged":
            assert r["score"] is None and name in r["detail"], r
    s = json.loads(summary.read_text())
    reasons = Counter(r["reason"] for r in records if r["reason"])
    assert s["records"]["total"] == len(files) and s["records"]["by_reason"] == dict(reasons)
    assert s["published"] == s["records"]["OK"] + s["records"]["NG"] == sum(c["judged"] for c in by_kind.values())
    report = {
        "files": len(files),
        "judged": s["published"],
        "by_reason": dict(sorted(reasons.items())),
        "by_kind": {k: dict(v) for k, v in by_kind.items()},
    }
    print("\ncorpus run:", json.dumps(report, indent=1))
    (tmp_path / "corpus_report.json").write_text(json.dumps(report, indent=1))
