"""benchmarks/device_check.sh (the acceptance check for a GPU machine) stays runnable here:
shellcheck-clean, its dry run lists every step with real paths, it refuses to run without CUDA
in one line, and the drift script it calls works (on the CPU, FP32)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "device_check.sh"


def _run(*args, timeout=120):
    return subprocess.run(
        ["bash", str(SCRIPT), "--python", sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture()
def data(tmp_path):
    root = tmp_path / "data"
    (root / "mvtec_ad" / "bottle" / "test").mkdir(parents=True)
    (root / "kolektorsdd" / "commutator" / "test").mkdir(parents=True)
    return root


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean():
    r = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_dry_run_lists_every_step_and_touches_nothing(data, tmp_path):
    out = tmp_path / "out"
    r = _run("--dry-run", "--data", data, "--out", out)
    assert r.returncode == 0, r.stderr
    steps = [ln.split()[2] for ln in r.stdout.splitlines() if ln.startswith("step ")]
    assert steps == [
        "gpu-tests",
        "bundle",
        "torch-drift",
        "bench",
        "engine-fp16",
        "calibrate",
        "engine-int8",
        "verify-trt-fp16",
        "verify-trt-int8",
        "trt-tests",
        "bench-trt",
        "raw-bundle",
        "raw-engine-fp16",
        "raw-bench-trt",
    ]
    text = r.stdout
    assert "-m gpu tests" in text and "-m tensorrt tests" in text
    assert "--compare trt:fp16,trt:int8,ort-cuda:fp32" in text
    assert f"--images {data}/mvtec_ad/bottle/test --images {data}/kolektorsdd/commutator/test" in text
    assert "--input-format bayer_rg8 --input-size 4096x2160" in text
    # every python entry the steps name exists in this tree
    assert (REPO / "benchmarks" / "torch_cuda_drift.py").is_file()
    assert not out.exists()


def test_given_bundle_skips_the_build(data, tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    r = _run("--dry-run", "--data", data, "--bundle", bundle)
    assert r.returncode == 0 and " bundle " not in r.stdout and f"--bundle {bundle}" in r.stdout


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--bogus"], "unknown argument"),
        (["--budget-s", "soon"], "whole number"),
        (["--data", "/nonexistent"], "sample data not found"),
    ],
)
def test_bad_arguments_are_one_line(args, msg, data):
    r = _run("--dry-run", *(args if "--data" in args else ["--data", data, *args]))
    assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_without_cuda_it_says_so_and_exits_non_zero(data, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would really run")
    out = tmp_path / "out"
    r = _run("--data", data, "--out", out)
    assert r.returncode == 3
    assert (
        r.stderr.strip().startswith("device_check: no CUDA GPU visible to torch")
        and len(r.stderr.strip().splitlines()) == 1
    )
    assert not out.exists()


@pytest.mark.slow
def test_drift_script_on_cpu_fp32(tiny_bundle, tmp_path, capsys):
    pytest.importorskip("torch")
    import importlib.util

    from train.synth import SynthSpec, make_synthetic_dataset

    data = make_synthetic_dataset(
        tmp_path / "d", SynthSpec(seed=1, categories=1, size=64, train_good=0, per_class=1), progress=False
    ).root
    out = tmp_path / "drift.json"
    spec = importlib.util.spec_from_file_location("torch_cuda_drift", REPO / "benchmarks" / "torch_cuda_drift.py")
    drift = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(drift)
    rc = drift.main(
        [
            "--bundle",
            str(tiny_bundle),
            "--images",
            str(data),
            "--device",
            "cpu",
            "--precisions",
            "fp32",
            "--max-images",
            "3",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    fp32 = json.loads(out.read_text())["results"]["fp32"]
    assert fp32["ok"] and fp32["images"] == 3 and fp32["max_abs_score_diff"] <= 1e-4
    assert "torch cpu fp32 vs ort-cpu fp32 on 3 images" in capsys.readouterr().out
    assert drift.main(["--bundle", str(tiny_bundle), "--images", str(data), "--precisions", "int4"]) in (2, 3)
