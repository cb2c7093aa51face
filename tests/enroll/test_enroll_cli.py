"""`clipinspect enroll` on real good images (MVTec bottle) through a torch-free toy bundle."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import numpy as np
import pytest

from edge_runtime.bundle import load_bundle
from edge_runtime.cli import main
from edge_runtime.imageio import read_rgb
from edge_runtime.preprocess import prepare
from edge_runtime.thresholds import binom_sf, frr_threshold


def _reference_scores(bundle, paths):
    """Scores straight from an ONNX Runtime session (not through enroll's code)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(bundle.path("model.onnx")), providers=["CPUExecutionProvider"])
    size = tuple(bundle.manifest.preprocess.image_size)
    batch = np.stack([prepare(read_rgb(p), size) for p in paths])
    return sess.run(["score"], {"image": batch, "text_embeddings": bundle.text_embeddings()})[0].astype(np.float64)


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_enroll_sets_threshold_at_target_frr_and_holds_on_held_out_good_parts(toy_bundle, mvtec_root, tmp_path, capsys):
    good = mvtec_root / "bottle" / "train" / "good"
    held = sorted((mvtec_root / "bottle" / "test" / "good").glob("*.png"))
    src_manifest = (toy_bundle.root / "manifest.json").read_bytes()
    out = tmp_path / "enrolled"
    assert (
        main(
            [
                "enroll",
                "--bundle",
                str(toy_bundle.root),
                "--images",
                str(good),
                "--target-frr",
                "0.1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "threshold" in printed and "P(FRR <= " in printed

    enrolled = load_bundle(out)  # every file re-hashed, the manifest loads through the runtime's checks
    thr = enrolled.manifest.threshold
    files = sorted(good.glob("*.png"))
    ref = _reference_scores(toy_bundle, files)
    assert thr.value == np.nextafter(ref.max(), np.inf) or thr.value == pytest.approx(
        np.nextafter(ref.max(), np.inf), abs=1e-6
    )
    assert thr.images == 30 and thr.epoch is None and thr.confidence == 0.95
    assert 0 < thr.frr <= 0.1
    digest = hashlib.sha256("".join(f"{h}\n" for h in sorted(_sha(p) for p in files)).encode()).hexdigest()
    assert thr.data_sha256 == digest == enrolled.manifest.lineage["enrollment"]["images_sha256"]
    doc = json.loads((out / "enrollment.json").read_text())
    assert "enrollment.json" in enrolled.manifest.files and len(doc["images"]) == 30
    assert (toy_bundle.root / "manifest.json").read_bytes() == src_manifest  # the original is untouched

    # Held-out good parts: the rejects must be consistent with FRR <= the stated bound.
    held_scores = _reference_scores(enrolled, held)
    rejects = int((held_scores >= thr.value).sum())
    assert binom_sf(rejects, len(held), thr.frr) >= 0.01, (rejects, thr.frr)


def test_rule_holds_across_random_enroll_and_held_out_splits(toy_bundle, mvtec_root):
    """All 40 good bottle images, 40 random 30/10 splits: the mean held-out reject rate
    stays below the target the enrollment certified."""
    good = sorted((mvtec_root / "bottle" / "train" / "good").glob("*.png")) + sorted(
        (mvtec_root / "bottle" / "test" / "good").glob("*.png")
    )
    scores = _reference_scores(toy_bundle, good)
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(40):
        order = rng.permutation(len(good))
        thr = frr_threshold(scores[order[:30]], 0.1)
        rates.append(float((scores[order[30:]] >= thr.value).mean()))
    assert np.mean(rates) <= 0.1


def _one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and err.startswith("clipinspect enroll: error:")
    return err


def test_bad_input_is_one_line_exit_2(toy_bundle, mvtec_root, tmp_path, capsys):
    good = str(mvtec_root / "bottle" / "train" / "good")
    base = ["enroll", "--bundle", str(toy_bundle.root), "--images", good, "--out", str(tmp_path / "o")]
    (tmp_path / "empty").mkdir()
    err = _one_line_error(
        capsys,
        [
            "enroll",
            "--bundle",
            str(toy_bundle.root),
            "--images",
            str(tmp_path / "empty"),
            "--target-frr",
            "0.1",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert "no images" in err
    assert "target FRR must be in" in _one_line_error(capsys, [*base, "--target-frr", "1.5"])
    assert "needs at least 598 good images, got 30" in _one_line_error(capsys, [*base, "--target-frr", "0.005"])
    assert "above 1" in _one_line_error(capsys, [*base, "--target-frr", "0.1", "--margin", "1.0"])
    err = _one_line_error(
        capsys,
        [
            "enroll",
            "--bundle",
            str(tmp_path / "nope"),
            "--images",
            good,
            "--target-frr",
            "0.1",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert "bundle folder not found" in err
    assert not (tmp_path / "o").exists()
    tampered = shutil.copytree(toy_bundle.root, tmp_path / "tampered")
    with open(tampered / "text_embeddings.npy", "ab") as fh:
        fh.write(b"x")
    assert "does not match its sha256" in _one_line_error(
        capsys,
        ["enroll", "--bundle", str(tampered), "--images", good, "--target-frr", "0.1", "--out", str(tmp_path / "o")],
    )


def test_best_effort_records_the_weaker_bound(toy_bundle, mvtec_root, tmp_path, capsys):
    out = tmp_path / "weak"
    assert (
        main(
            [
                "enroll",
                "--bundle",
                str(toy_bundle.root),
                "--images",
                str(mvtec_root / "bottle" / "train" / "good"),
                "--target-frr",
                "0.005",
                "--best-effort",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "WARNING: 30 images certify FRR <= 0.095" in capsys.readouterr().out
    thr = load_bundle(out).manifest.threshold
    assert math.isclose(thr.frr, 1 - 0.05 ** (1 / 30), rel_tol=1e-6) and "BEST EFFORT" in thr.method
