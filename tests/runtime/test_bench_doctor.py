"""`clipinspect bench` (JSON + PNG + table) and `clipinspect doctor`."""

from __future__ import annotations

import json
import os
import socket

import cv2
import pytest

from edge_runtime.bench import BenchSpec, ratios
from edge_runtime.cli import main
from edge_runtime.doctor import check_broker, check_gentl
from edge_runtime.errors import ConfigError


def test_bench_compare_writes_json_png_and_table(toy_bundle, tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(
        [
            "bench",
            "--bundle",
            str(toy_bundle.root),
            "--compare",
            "ort-cpu:fp32,ort-cpu:int8",
            "--iterations",
            "20",
            "--frames",
            "15",
            "--warmup",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    doc = json.loads((out / "bench.json").read_text())
    assert doc["schema"] == "clipinspect.bench" and [r["label"] for r in doc["runs"]] == [
        "ort-cpu:fp32",
        "ort-cpu:int8",
    ]
    for run in doc["runs"]:
        model, e2e = run["model"], run["e2e"]
        assert model["iterations"] == 20 and len(model["samples_ms"]) == 20
        lat = model["latency_ms"]
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert e2e["frames"] == 15 and e2e["drops"] == 0
        assert set(e2e["stages"]) == {
            "capture_wait",
            "queue",
            "preprocess",
            "inference",
            "postprocess",
            "publish",
            "total",
        }
        assert run["ratios"]["e2e_p50_over_model_p50"] == pytest.approx(
            e2e["stages"]["total"]["p50_ms"] / lat["p50_ms"], rel=1e-3
        )
    assert doc["runs"][1]["backend_info"]["model_file"] == "model.int8.onnx"
    img = cv2.imread(str(out / "bench.png"))
    assert img is not None and img.shape[0] > 100 and img.std() > 0
    table = capsys.readouterr().out
    assert "p50 ratio" in table and "fps ratio" in table and "ort-cpu:int8" in table


def test_bench_rounds_pool_samples(toy_bundle, tmp_path):
    out = tmp_path / "r"
    rc = main(
        [
            "bench",
            "--bundle",
            str(toy_bundle.root),
            "--rounds",
            "3",
            "--iterations",
            "10",
            "--frames",
            "9",
            "--warmup",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    run = json.loads((out / "bench.json").read_text())["runs"][0]
    assert run["model"]["rounds"] == 3 and run["model"]["iterations"] == 10 and len(run["model"]["samples_ms"]) == 10
    assert run["e2e"]["rounds"] == 3 and run["e2e"]["frames"] == 9 and run["e2e"]["stages"]["total"]["count"] == 9
    assert run["e2e"]["fps"] > 0
    per = run["ratios"]["per_round"]
    assert len(per) == 3
    import numpy as np

    assert run["ratios"]["median_round_e2e_p50_over_model_p50"] == pytest.approx(
        np.median([p["e2e_p50_over_model_p50"] for p in per]), abs=1e-3
    )


def test_bench_model_only_with_jsonl_publisher_source_override(toy_bundle, tmp_path):
    out = tmp_path / "b"
    rc = main(
        [
            "bench",
            "--bundle",
            str(toy_bundle.root),
            "--mode",
            "e2e",
            "--frames",
            "5",
            "--warmup",
            "0",
            "--publish",
            f"jsonl://{tmp_path / 'v.jsonl'}",
            "--source",
            "synthetic://?width=200&height=100",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    doc = json.loads((out / "bench.json").read_text())
    assert "model" not in doc["runs"][0] and doc["runs"][0]["e2e"]["frames"] == 5
    assert len((tmp_path / "v.jsonl").read_text().splitlines()) == 5


def test_bench_compare_spec_parsing():
    assert BenchSpec.parse_list("ort-cpu, trt:fp16") == [BenchSpec("ort-cpu", "fp32"), BenchSpec("trt", "fp16")]
    with pytest.raises(ConfigError):
        BenchSpec.parse_list("ort-cpu:fp8")
    assert ratios(
        {"latency_ms": {"p50_ms": 10.0}, "fps": 100.0}, {"stages": {"total": {"p50_ms": 11.0}}, "fps": 95.0}
    ) == {
        "e2e_p50_over_model_p50": 1.1,
        "fps_over_model_fps": 0.95,
    }


def test_bench_unavailable_backend_exits_2(toy_bundle, tmp_path, capsys):
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("TensorRT EP available")
    rc = main(
        [
            "bench",
            "--bundle",
            str(toy_bundle.root),
            "--compare",
            "ort-cpu:fp32,ort-trt:fp16",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--iterations",
            "2",
            "--frames",
            "2",
        ]
    )
    assert rc == 2 and "ort-trt" in capsys.readouterr().err


def test_doctor_json(toy_bundle, capsys):
    rc = main(["doctor", "--json", "--bundle", str(toy_bundle.root)])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["ok"] is True
    by_name = {c["name"]: c for c in doc["checks"]}
    assert by_name["backend ort-cpu"]["status"] == "ok"
    assert (
        by_name["bundle"]["status"] == "ok"
        and by_name["bundle"]["data"]["manifest_sha256"] == toy_bundle.manifest_sha256
    )
    assert "CPUExecutionProvider" in by_name["onnxruntime"]["data"]["providers"]


def test_doctor_fails_for_requested_checks(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    rc = main(
        [
            "doctor",
            "--broker",
            f"mqtt://127.0.0.1:{port}",
            "--bundle",
            str(tmp_path),
            "--backend",
            "ort-cuda",
            "--timeout",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1
    assert "[FAIL] broker" in out and "TCP connect failed" in out
    assert "[FAIL] bundle" in out and "no manifest.json" in out
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "[FAIL] backend ort-cuda" in out


@pytest.mark.broker
def test_doctor_broker_mqtt_connect_against_real_broker(mqtt_broker):
    check = check_broker(mqtt_broker.uri, timeout_s=3)
    assert check.status == "ok", check.detail


def test_doctor_broker_that_is_not_mqtt():
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def answer():
        conn, _ = srv.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    check = check_broker(f"mqtt://127.0.0.1:{srv.getsockname()[1]}", timeout_s=2)
    srv.close()
    assert check.status == "fail" and "no MQTT CONNACK" in check.detail


def test_doctor_gentl_lists_the_viky_producer(monkeypatch):
    genicam = pytest.importorskip("genicam")
    cti_dir = os.path.dirname(genicam.__file__)
    if not os.path.isfile(os.path.join(cti_dir, "viky.cti")):
        pytest.skip("genicam ships no viky.cti here")
    monkeypatch.setenv("GENICAM_GENTL64_PATH", cti_dir)
    check = check_gentl()
    assert check.status in ("ok", "info") and "viky.cti" in check.detail
