"""Few-shot memory bank: fusion maths, the exported graph (zero bank = zero-shot exactly,
torch vs ONNX parity with an enrolled bank on real images), enrolment on the device path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.bundle import load_bundle
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.fewshot import BANK_FILE, bank_from_features, build_bank, draw_shots, list_good_images, model_input


def test_bank_from_features_repeats_rows_and_keeps_the_max():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((3, 2, 5, 4)).astype(np.float32)  # K=3, L=2, P=5, D=4
    bank = bank_from_features(feats, max_shots=4)
    assert bank.shape == (2, 20, 4)
    # first the K images' rows in order, layer by layer
    np.testing.assert_array_equal(bank[1, 5:10], feats[1, 1])
    np.testing.assert_array_equal(bank[0, 15:20], feats[0, 0])  # wrapped around
    q = rng.standard_normal((7, 4)).astype(np.float32)
    unpadded = feats.transpose(1, 0, 2, 3).reshape(2, 15, 4)
    np.testing.assert_array_equal((q @ bank[0].T).max(1), (q @ unpadded[0].T).max(1))
    with pytest.raises(ConfigError):
        bank_from_features(feats, max_shots=2)


def test_draw_shots_is_seeded_and_distinct(tmp_path):
    imgs = [tmp_path / f"{i}.png" for i in range(10)]
    a, b = draw_shots(imgs, 4, seed=1), draw_shots(imgs, 4, seed=1)
    assert a == b and len(set(a)) == 4
    assert draw_shots(imgs, 4, seed=2) != a
    with pytest.raises(ConfigError):
        draw_shots(imgs, 11)


def _tiny(merged_tiny_dir):
    import torch

    from train.merged import load_merged

    model, _ = load_merged(merged_tiny_dir)
    return model.to(torch.float32).eval()


def test_zero_bank_is_exactly_zero_shot_and_a_bank_changes_the_map(merged_tiny_dir):
    import torch

    from train.model import fewshot_map

    model = _tiny(merged_tiny_dir)
    x = torch.randn(2, 3, *model.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text = model.text_embeddings()
        zs = model(x, text)
        n_layers, patches = len(model.feature_layers), model.grid[0] * model.grid[1]
        zero = model(x, text, torch.zeros(n_layers, 2 * patches, model.embed_dim))
        torch.testing.assert_close(zero.score, zs.score, rtol=0, atol=0)
        torch.testing.assert_close(zero.anomaly_map, zs.anomaly_map, rtol=0, atol=0)
        _, feats = model.forward_features(x, text)
        bank = torch.from_numpy(bank_from_features(feats[:1].numpy(), 2))
        fs = model(x, text, bank)
        own = fewshot_map(feats, bank, model.grid)
    # image 0 is in the bank: its few-shot distance is 0 everywhere, so the map halves
    torch.testing.assert_close(own[0], torch.zeros_like(own[0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(fs.anomaly_map[0], 0.5 * zs.anomaly_map[0], atol=1e-5, rtol=0)
    assert not torch.allclose(fs.anomaly_map[1], zs.anomaly_map[1])


@pytest.fixture(scope="module")
def bank_bundle(merged_tiny_dir, tmp_path_factory):
    pytest.importorskip("onnxscript")
    from tests.plugins.bundles import export_tiny

    return export_tiny(merged_tiny_dir, tmp_path_factory.mktemp("fs") / "bundle", bank_shots=2)


def test_export_contract_and_unenrolled_graph_equals_plain_export(bank_bundle, tiny_bundle):
    from edge_runtime.backends.onnxruntime import OrtBackend

    m = bank_bundle.manifest
    assert m.fewshot is not None and m.fewshot.bank_file is None and m.fewshot.max_shots == 2
    bank_in = m.input("memory_bank")
    assert bank_in.shape == (m.fewshot.layers, 2 * m.fewshot.patches, m.fewshot.dim)
    assert m.output("patch_features").shape == (1, m.fewshot.layers, m.fewshot.patches, m.fewshot.dim)
    plain, fs = OrtBackend(), OrtBackend()
    plain.load(load_bundle(tiny_bundle)), fs.load(bank_bundle)
    x = np.random.default_rng(3).integers(0, 256, (1, *m.preprocess.image_size, 3), dtype=np.uint8)
    a, b = plain.infer(x), fs.infer(x)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)


def test_enrol_then_torch_vs_onnx_parity_on_real_images(bank_bundle, mvtec_root, tmp_path, capsys):
    from edge_runtime.backends.onnxruntime import OrtBackend
    from edge_runtime.fewshot import main
    from export.parity import list_images, run_parity
    from export.torch_backend import TorchBackend

    good = mvtec_root / "bottle" / "train" / "good"
    out = tmp_path / "enrolled"
    assert (
        main(
            ["--bundle", str(bank_bundle.root), "--images", str(good), "--shots", "2", "--seed", "0", "--out", str(out)]
        )
        == 0
    )
    enrolled = load_bundle(out)
    spec = enrolled.manifest.fewshot
    assert spec.bank_file == BANK_FILE and spec.shots == 2 and len(spec.images) == 2 and len(spec.images_sha256) == 64
    assert enrolled.manifest.input_profile == "input_profile.json"
    bank = enrolled.memory_bank()
    assert bank.shape == bank_bundle.memory_bank().shape and np.abs(bank).max() > 0

    ort_b, torch_b = OrtBackend(), TorchBackend()
    ort_b.load(enrolled), torch_b.load(enrolled)
    # the bank built through torch's features equals the ONNX-built one
    chosen = [good / n for n in spec.images]
    np.testing.assert_allclose(build_bank(torch_b, enrolled, chosen), bank, atol=1e-4, rtol=0)
    images = list_images(mvtec_root / "bottle" / "test", max_images=6)
    report = run_parity(enrolled, torch_b, ort_b, images, atol=1e-4, progress=False)
    assert report.ok, report.summary()
    # and the bank is really used: scores differ from the unenrolled bundle's
    plain = OrtBackend()
    plain.load(bank_bundle)
    x = model_input(enrolled, images[0])
    assert abs(float(plain.infer(x).score[0]) - float(ort_b.infer(x).score[0])) > 1e-4


def test_tampered_or_misshapen_bank_is_refused(bank_bundle, tmp_path):
    from edge_runtime.fewshot import save_bank, write_bundle_copy

    m = bank_bundle.manifest.fewshot
    good = np.ones((m.layers, m.max_shots * m.patches, m.dim), np.float32)
    with pytest.raises(BundleError, match="does not fit"):
        write_bundle_copy(
            bank_bundle,
            tmp_path / "bad",
            lambda root, man: save_bank(root, man, good[:, :3], [bank_bundle.root / "manifest.json"]),
        )
    out = write_bundle_copy(
        bank_bundle, tmp_path / "b", lambda root, man: save_bank(root, man, good, [bank_bundle.root / "manifest.json"])
    )
    np.save(out.root / BANK_FILE, np.zeros_like(good))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(out.root)


def test_user_errors_are_one_line_exit_2(bank_bundle, tiny_bundle, mvtec_root, tmp_path, capsys):
    from edge_runtime.fewshot import main

    good = str(mvtec_root / "bottle" / "train" / "good")
    assert (
        main(["--bundle", str(bank_bundle.root), "--images", good, "--shots", "3", "--out", str(tmp_path / "o")]) == 2
    )
    assert "holds 1..2 images" in capsys.readouterr().err
    assert main(["--bundle", str(tiny_bundle), "--images", good, "--shots", "1", "--out", str(tmp_path / "o")]) == 2
    assert "--bank-shots" in capsys.readouterr().err
    assert (
        main(
            ["--bundle", str(bank_bundle.root), "--images", str(tmp_path), "--shots", "1", "--out", str(tmp_path / "o")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no images" in err


def test_eval_fewshot_protocol(merged_tiny_dir, mvtec_root):
    from train.data import load_samples
    from train.fewshot_eval import evaluate_fewshot, format_fewshot

    model = _tiny(merged_tiny_dir)
    test = load_samples(mvtec_root, splits=("test",), categories=["bottle"])[::3]
    train = load_samples(mvtec_root, splits=("train",), categories=["bottle"])
    r = evaluate_fewshot(
        model, test, train, 2, model.image_size, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28), seeds=(0, 1, 2)
    )
    test_files = {str(s.image_path) for s in test}
    for seed in (0, 1, 2):
        files = r.banks[seed]["bottle"]
        assert len(set(files)) == 2 and not test_files & set(files) and all("/train/good/" in f for f in files)
    aucs = [r.per_seed[s]["bottle"].image_auroc for s in (0, 1, 2)]
    assert r.mean["bottle"]["image_auroc"] == pytest.approx(np.mean(aucs))
    assert "seeds 0, 1, 2" in format_fewshot(r)
    json.dumps(r.as_dict())


def test_re_enrolling_a_hard_linked_copy_leaves_the_source_intact(bank_bundle, tmp_path):
    from edge_runtime.fewshot import save_bank, write_bundle_copy

    m = bank_bundle.manifest.fewshot
    shape = (m.layers, m.max_shots * m.patches, m.dim)
    first = write_bundle_copy(
        bank_bundle,
        tmp_path / "a",
        lambda r, man: save_bank(r, man, np.ones(shape, np.float32), [bank_bundle.root / "manifest.json"]),
    )
    second = write_bundle_copy(
        first,
        tmp_path / "b",
        lambda r, man: save_bank(r, man, np.full(shape, 2, np.float32), [bank_bundle.root / "manifest.json"]),
    )
    assert (first.root / "model.onnx").stat().st_ino == (second.root / "model.onnx").stat().st_ino  # linked, not copied
    assert load_bundle(first.root).memory_bank().max() == 1.0  # hashes still verify
    assert load_bundle(second.root).memory_bank().max() == 2.0


def test_tensorrt_backend_enrols_and_feeds_the_bank(bank_bundle, mvtec_root, tmp_path, monkeypatch):
    """Against the TensorRT/pycuda stand-ins (tests/fakes): the engine built before enrolment
    serves the enrolled bundle; its patch features and scores equal ONNX Runtime's."""
    from edge_runtime.backends.onnxruntime import OrtBackend
    from edge_runtime.fewshot import save_bank, write_bundle_copy
    from edge_runtime.trt.builder import BuildOptions, build_engine
    from edge_runtime.trt.runtime import TrtBackend
    from tests.plugins.bundles import copy_bundle
    from tests.trt.conftest import install_fakes

    install_fakes(monkeypatch, "10.3.0")
    root = copy_bundle(bank_bundle.root, tmp_path / "b")
    build_engine(load_bundle(root), BuildOptions(precision="fp16"))
    bundle = load_bundle(root)
    good = sorted((mvtec_root / "bottle" / "train" / "good").glob("*.png"))[:2]
    trt_b, ort_b = TrtBackend(), OrtBackend()
    trt_b.load(bundle, "fp16"), ort_b.load(bundle)
    bank = build_bank(trt_b, bundle, good)
    np.testing.assert_allclose(bank, build_bank(ort_b, bundle, good), atol=1e-2, rtol=0)
    x0 = model_input(bundle, mvtec_root / "bottle" / "test" / "broken_large" / "000.png")
    before = float(trt_b.infer(x0).score[0])
    trt_b.set_memory_bank(bank), ort_b.set_memory_bank(bank)  # swap in without reloading
    after = trt_b.infer(x0).score
    np.testing.assert_allclose(after, ort_b.infer(x0).score, atol=1e-2)
    assert abs(float(after[0]) - before) > 2e-2  # the bank moved the score well beyond fp16 noise
    ort_b.set_memory_bank(np.zeros_like(bank))
    trt_b.close()
    enrolled = write_bundle_copy(bundle, tmp_path / "e", lambda r, m: save_bank(r, m, bank, good))
    assert enrolled.manifest.engines == bundle.manifest.engines  # no rebuild
    trt_e, ort_e = TrtBackend(), OrtBackend()
    trt_e.load(enrolled, "fp16"), ort_e.load(enrolled)
    x = model_input(enrolled, mvtec_root / "bottle" / "test" / "broken_large" / "000.png")
    np.testing.assert_allclose(trt_e.infer(x).score, ort_e.infer(x).score, atol=1e-2)
    assert abs(float(ort_e.infer(x).score[0]) - float(ort_b.infer(x).score[0])) > 1e-4
    trt_e.close()


def test_enrol_shots_switches_the_backend_and_returns_the_rest(bank_bundle, mvtec_root):
    from edge_runtime.backends.onnxruntime import OrtBackend
    from edge_runtime.fewshot import enrol_shots

    images = list_good_images(mvtec_root / "bottle" / "train" / "good")[:6]
    be = OrtBackend()
    be.load(bank_bundle)
    x = model_input(bank_bundle, images[0])
    before = float(be.infer(x).score[0])
    bank, shots, rest = enrol_shots(be, bank_bundle, images, 2, seed=3)
    assert (
        shots == draw_shots(images, 2, seed=3) and sorted(shots + rest) == sorted(images) and not set(shots) & set(rest)
    )
    assert float(be.infer(x).score[0]) != before  # the backend now scores with the bank
    np.testing.assert_array_equal(bank, build_bank(be, bank_bundle, shots))


def test_bank_with_baked_text_and_dynamic_batch(merged_tiny_dir, tiny_bundle, tmp_path):
    from edge_runtime.backends.onnxruntime import OrtBackend
    from tests.plugins.bundles import export_tiny

    b = export_tiny(merged_tiny_dir, tmp_path / "b", bank_shots=1, bake_text=True, dynamic_batch=True)
    assert [s.name for s in b.manifest.inputs] == ["image", "memory_bank"]
    fs, plain = OrtBackend(), OrtBackend()
    fs.load(b), plain.load(load_bundle(tiny_bundle))
    x = np.random.default_rng(5).integers(0, 256, (3, *b.manifest.preprocess.image_size, 3), dtype=np.uint8)
    feats = fs.patch_features(x)
    assert feats.shape[0] == 3
    ref = np.concatenate([plain.infer(x[i : i + 1]).score for i in range(3)])
    np.testing.assert_allclose(fs.infer(x).score, ref, atol=1e-5, rtol=0)  # unenrolled: zero-shot
    fs.set_memory_bank(bank_from_features(feats[:1], 1))
    assert fs.infer(x[:1]).anomaly_map.max() <= 0.5 * plain.infer(x[:1]).anomaly_map.max() + 1e-5  # own image: halved


def test_clipinspect_enroll_shots_stores_bank_and_profile_and_thresholds_on_the_rest(
    bank_bundle, tiny_bundle, mvtec_root, tmp_path, capsys
):
    from edge_runtime.cli import main as cli
    from edge_runtime.fewshot import draw_shots, list_good_images

    good = mvtec_root / "bottle" / "train" / "good"
    out = tmp_path / "enrolled"
    rc = cli(
        [
            "enroll",
            "--bundle",
            str(bank_bundle.root),
            "--images",
            str(good),
            "--target-frr",
            "0.1",
            "--best-effort",
            "--shots",
            "2",
            "--shot-seed",
            "4",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    enrolled = load_bundle(out)
    m = enrolled.manifest
    images = list_good_images(good)
    chosen = draw_shots(images, 2, seed=4)
    assert m.fewshot.shots == 2 and list(m.fewshot.images) == [p.name for p in chosen]
    assert np.abs(enrolled.memory_bank()).max() > 0 and m.input_profile == "input_profile.json"
    # the threshold was chosen on the OTHER images, scored with the bank
    doc = json.loads((out / "enrollment.json").read_text())
    scored = {d["file"] for d in doc["images"]}
    assert scored == {p.name for p in images} - {p.name for p in chosen} and m.threshold.images == len(images) - 2
    assert m.threshold.value == pytest.approx(max(d["score"] for d in doc["images"]))
    assert "few-shot bank: 2 image(s)" in capsys.readouterr().out
    # a bundle without a memory_bank input: one line, exit 2
    assert (
        cli(
            [
                "enroll",
                "--bundle",
                str(tiny_bundle),
                "--images",
                str(good),
                "--target-frr",
                "0.1",
                "--shots",
                "2",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "--bank-shots" in err and len(err.splitlines()) == 1 and not (tmp_path / "x").exists()
