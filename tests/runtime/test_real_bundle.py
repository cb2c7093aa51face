"""The runtime on a REAL export (H3's tiny_bundle: torch needed to build it, not to run it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.bundle import load_bundle
from edge_runtime.cli import main
from edge_runtime.pipeline import make_preprocessor
from edge_runtime.verdict import validate_verdict


@pytest.mark.slow
def test_run_and_bench_on_the_tiny_export(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle)
    h, w = bundle.manifest.preprocess.image_size
    out = tmp_path / "v.jsonl"
    rc = main(
        [
            "run",
            "--bundle",
            str(tiny_bundle),
            "--source",
            f"synthetic://?width={2 * w}&height={2 * h}&pixel_format=BayerRG8",
            "--publish",
            f"jsonl://{out}",
            "--max-frames",
            "6",
            "--set",
            "pipeline.drop_policy=block",
        ]
    )
    assert rc == 0
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(verdicts) == 6 and all(validate_verdict(v) == [] for v in verdicts)
    assert all(
        v["model_id"] == bundle.manifest.model_id and v["bundle_sha256"] == bundle.manifest_sha256 for v in verdicts
    )
    assert len({round(v["score"], 6) for v in verdicts}) > 1  # frames differ, so scores do
    rc = main(
        [
            "bench",
            "--bundle",
            str(tiny_bundle),
            "--iterations",
            "5",
            "--frames",
            "5",
            "--warmup",
            "1",
            "--out",
            str(tmp_path / "b"),
            "--no-progress",
        ]
    )
    assert rc == 0 and (tmp_path / "b" / "bench.png").is_file()


def test_preprocessor_matches_export_input_layout(toy_bundle):
    pre = make_preprocessor(toy_bundle)
    from edge_runtime.frames import Frame

    x = pre(Frame(np.zeros((10, 20), np.uint8), 0, 0, "c", {"pixel_format": "Mono8"}))
    assert x.shape == (64, 64, 3) and x.dtype == np.uint8
