"""ONNX export of the merged tiny model: checker, I/O contract, variants (dynamic batch,
baked text, float input) agree with the default graph and with torch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge_runtime.bundle import load_bundle
from edge_runtime.preprocess import normalize
from export.onnx_export import check_graph, graph_io
from tests.plugins.bundles import export_tiny

_ORT_DTYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32"}


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *size, 3), dtype=np.uint8)


def test_onnx_checker_and_io_match_manifest(tiny_bundle, merged_tiny_dir):
    bundle = load_bundle(tiny_bundle)
    m = bundle.manifest
    proto = onnx.load(str(bundle.model_path()))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == m.opset >= 17
    check_graph(proto, m.inputs, m.outputs)  # raises on any mismatch
    # JetPack 6's TensorRT ONNX parsers read IR <= 10; the exporter writes 8
    assert m.extra["export"]["ir_version"] == proto.ir_version <= 10
    h, w = m.preprocess.image_size
    assert [(s.name, s.dtype, tuple(s.shape)) for s in m.inputs] == [
        ("image", "uint8", (1, h, w, 3)),
        ("text_embeddings", "float32", (2, bundle.text_embeddings().shape[1])),
    ]
    assert [(s.name, s.dtype) for s in m.outputs] == [("score", "float32"), ("anomaly_map", "float32")]
    assert m.preprocess.input_layout == "NHWC_uint8" and m.preprocess.color_order == "RGB"
    assert m.extra["merged_model"] == str(merged_tiny_dir.absolute())
    # what ONNX Runtime sees is what the manifest says
    sess = _session(bundle.model_path())
    for got, spec in zip(list(sess.get_inputs()) + list(sess.get_outputs()), m.inputs + m.outputs):
        assert (got.name, _ORT_DTYPES[got.type], tuple(got.shape)) == (spec.name, spec.dtype, tuple(spec.shape))
    score, amap = sess.run(None, {"image": _images(1, (h, w)), "text_embeddings": bundle.text_embeddings()})
    assert score.shape == (1,) and amap.shape == tuple(m.output("anomaly_map").shape)
    assert 0.0 <= float(score[0]) <= 1.0 and amap.min() >= 0.0 and amap.max() <= 1.0


def test_manifest_carries_merged_info(tiny_bundle, merged_tiny_dir):
    import torch

    from train.merged import load_merged

    m = load_bundle(tiny_bundle).manifest
    model, info = load_merged(merged_tiny_dir)
    assert m.model_id == info.model_id and m.clip_source == info.clip_source
    assert m.threshold.value == pytest.approx(info.threshold) and m.threshold.method == info.threshold_method
    assert tuple(m.preprocess.mean) == tuple(info.mean) and tuple(m.preprocess.image_size) == tuple(info.image_size)
    assert m.text.prompts == {"normal": info.prompts[0], "abnormal": info.prompts[1]}
    assert tuple(m.output("anomaly_map").shape[1:]) == tuple(info.grid)
    # the shipped embeddings are the merged text tower's output
    with torch.no_grad():
        expect = model.text_embeddings().numpy()
    np.testing.assert_allclose(load_bundle(tiny_bundle).text_embeddings(), expect, atol=1e-6)


def test_graph_io_reader_catches_contract_breaks(tiny_bundle):
    from dataclasses import replace

    from edge_runtime.errors import BundleError

    m = load_bundle(tiny_bundle).manifest
    proto = onnx.load(str(tiny_bundle / "model.onnx"))
    ins, outs = graph_io(proto)
    assert list(ins) == ["image", "text_embeddings"] and list(outs) == ["score", "anomaly_map"]
    wrong = (replace(m.inputs[0], dtype="float32"),) + m.inputs[1:]
    with pytest.raises(BundleError, match="input 'image' is uint8"):
        check_graph(proto, wrong, m.outputs)
    with pytest.raises(BundleError, match="outputs are"):
        check_graph(proto, m.inputs, m.outputs[:1])


@pytest.fixture(scope="module")
def variants(merged_tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    return {
        "dynamic": export_tiny(merged_tiny_dir, root / "dynamic", dynamic_batch=True),
        "baked": export_tiny(merged_tiny_dir, root / "baked", bake_text=True),
        "float": export_tiny(merged_tiny_dir, root / "float", float_input=True),
        "opset18": export_tiny(merged_tiny_dir, root / "opset18", opset=18),
    }


def test_dynamic_batch_n1_and_n3(variants, tiny_bundle):
    b = variants["dynamic"]
    assert b.manifest.input("image").shape[0] == "batch" and b.manifest.output("score").shape == ("batch",)
    sess, ref = _session(b.model_path()), _session(load_bundle(tiny_bundle).model_path())
    text = b.text_embeddings()
    imgs = _images(3, b.manifest.preprocess.image_size, seed=1)
    s3, m3 = sess.run(None, {"image": imgs, "text_embeddings": text})
    assert s3.shape == (3,) and m3.shape[0] == 3
    for i in range(3):
        s1, m1 = sess.run(None, {"image": imgs[i : i + 1], "text_embeddings": text})
        rs, rm = ref.run(None, {"image": imgs[i : i + 1], "text_embeddings": text})
        np.testing.assert_allclose(s1, s3[i : i + 1], atol=1e-5)
        np.testing.assert_allclose(m1, m3[i : i + 1], atol=1e-5)
        np.testing.assert_allclose(s1, rs, atol=1e-5)
        np.testing.assert_allclose(m1, rm, atol=1e-5)
    # the images differ, so a graph that ignored the batch index would fail above; make sure
    assert np.ptp(m3.reshape(3, -1).mean(axis=1)) > 0


def test_baked_text_equals_input_text(variants, tiny_bundle):
    b = variants["baked"]
    assert [s.name for s in b.manifest.inputs] == ["image"] and b.manifest.text.baked
    assert b.text_embeddings() is None
    assert [i.name for i in onnx.load(str(b.model_path())).graph.input] == ["image"]
    plain = load_bundle(tiny_bundle)
    imgs = _images(1, plain.manifest.preprocess.image_size, seed=2)
    sb, mb = _session(b.model_path()).run(None, {"image": imgs})
    sp, mp = _session(plain.model_path()).run(None, {"image": imgs, "text_embeddings": plain.text_embeddings()})
    np.testing.assert_allclose(sb, sp, atol=1e-6)
    np.testing.assert_allclose(mb, mp, atol=1e-6)
    # and the text really matters: other embeddings give another score
    s_other, _ = _session(plain.model_path()).run(
        None, {"image": imgs, "text_embeddings": plain.text_embeddings()[::-1].copy()}
    )
    assert abs(float(s_other[0]) - float(sp[0])) > 1e-3


def test_opset_18_export_equals_opset_17(variants, tiny_bundle):
    b = variants["opset18"]
    proto = onnx.load(str(b.model_path()))
    assert b.manifest.opset == 18 and {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {18}
    plain = load_bundle(tiny_bundle)
    imgs = _images(1, plain.manifest.preprocess.image_size, seed=4)
    feeds = {"image": imgs, "text_embeddings": plain.text_embeddings()}
    s18, m18 = _session(b.model_path()).run(None, feeds)
    s17, m17 = _session(plain.model_path()).run(None, feeds)
    np.testing.assert_allclose(s18, s17, atol=1e-6)
    np.testing.assert_allclose(m18, m17, atol=1e-6)


def test_float_input_equals_uint8_input(variants, tiny_bundle):
    b = variants["float"]
    pre = b.manifest.preprocess
    assert pre.input_layout == "NCHW_float32"
    h, w = pre.image_size
    assert b.manifest.input("image").shape == (1, 3, h, w) and b.manifest.input("image").dtype == "float32"
    plain = load_bundle(tiny_bundle)
    imgs = _images(1, (h, w), seed=3)
    text = plain.text_embeddings()
    sf, mf = _session(b.model_path()).run(None, {"image": normalize(imgs, pre.mean, pre.std), "text_embeddings": text})
    su, mu = _session(plain.model_path()).run(None, {"image": imgs, "text_embeddings": text})
    np.testing.assert_allclose(sf, su, atol=1e-5)
    np.testing.assert_allclose(mf, mu, atol=1e-5)


def test_export_uses_eager_attention_and_restores_the_models_choice(merged_tiny_dir, tmp_path):
    """SDPA-configured models export through eager attention (plain MatMul/Softmax) and get
    their own setting back afterwards."""
    import torch

    from export.onnx_export import ExportOptions, export_onnx
    from export.text_embeddings import compute_text_embeddings
    from train.merged import load_merged

    model, info = load_merged(merged_tiny_dir)
    model.clip.set_attn_implementation("sdpa")
    seen = []
    hook = model.clip.vision_model.encoder.layers[0].register_forward_pre_hook(
        lambda mod, args: seen.append(model.clip.config._attn_implementation)
    )
    text = compute_text_embeddings(model)
    res = export_onnx(
        model,
        tmp_path / "m.onnx",
        image_size=info.image_size,
        mean=info.mean,
        std=info.std,
        text_embeddings=text,
        options=ExportOptions(),
    )
    hook.remove()
    assert seen and set(seen) == {"eager"}
    assert model.clip.config._attn_implementation == "sdpa"
    ops = {n.op_type for n in onnx.load(str(res.path)).graph.node}
    assert "Softmax" in ops and res.self_check_max_diff <= 1e-4
    assert not model.training and torch.is_grad_enabled()  # eval kept, grad mode restored
