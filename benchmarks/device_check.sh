#!/usr/bin/env bash
# Acceptance check for a freshly provisioned GPU machine (a Jetson with JetPack, a desktop with
# CUDA, with or without TensorRT). One command, nothing downloaded, everything under one folder:
#
#   benchmarks/device_check.sh [--data DIR] [--out DIR] [--python PY] [--bundle DIR]
#                              [--budget-s S] [--max-images N] [--dry-run]
#
# Steps (each logged to OUT/logs/NN-name.log, one line each in OUT/summary.tsv):
#   env            GPU, driver, python packages                      -> OUT/env.txt
#   gpu-tests      pytest -m gpu (CUDA training with AMP)            -> OUT/gpu-tests.xml
#   bundle         random-weight ViT-B/16 bundle, model-size RGB (unless --bundle)
#   torch-drift    torch backend on CUDA, FP32 and FP16, against ONNX Runtime CPU FP32 scores
#                  on the real images under DATA: the FP16 drift an engine must stay within
#   bench          clipinspect bench, model-only, for the ONNX Runtime providers present
# and where `import tensorrt, pycuda.driver` works:
#   engine-fp16, calibrate + engine-int8, verify-trt-fp16/int8, trt-tests (pytest -m tensorrt),
#   bench-trt      bench --compare trt:fp16,trt:int8,ort-cuda:fp32 (ort-cuda when present)
#   raw-*          the same for a 4096x2160 BayerRG8 raw-frame bundle, when
#                  `python -m export.random_bundle --input-format` exists
#
# Without CUDA it says so in one line and exits 3 (no silent CPU fallback). A step that fails is
# recorded and the check goes on; the exit status is 1 if any step failed. Steps that would start
# after --budget-s (default 420 s, so the whole check stays under 8 minutes) are recorded as
# "skipped (budget)" and fail the check too. --dry-run prints the steps and runs nothing.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$REPO/../shared/data"
OUT=""
PY=""
BUNDLE=""
BUDGET=420
MAX_IMAGES=24
DRY=0

usage() {
    sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

die() {
    echo "device_check: $*" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --data) [ $# -ge 2 ] || die "--data needs a folder"; DATA="$2"; shift 2 ;;
        --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT="$2"; shift 2 ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PY="$2"; shift 2 ;;
        --bundle) [ $# -ge 2 ] || die "--bundle needs a folder"; BUNDLE="$2"; shift 2 ;;
        --budget-s) [ $# -ge 2 ] || die "--budget-s needs seconds"; BUDGET="$2"; shift 2 ;;
        --max-images) [ $# -ge 2 ] || die "--max-images needs a number"; MAX_IMAGES="$2"; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

case "$BUDGET" in '' | *[!0-9]*) die "--budget-s must be a whole number of seconds, got '$BUDGET'" ;; esac
case "$MAX_IMAGES" in '' | *[!0-9]*) die "--max-images must be a whole number, got '$MAX_IMAGES'" ;; esac
if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY="$(command -v python3 || true)"; fi
fi
if [ -z "$PY" ] || [ ! -x "$PY" ]; then die "no python interpreter (pass --python PY)"; fi
[ -d "$DATA/mvtec_ad/bottle/test" ] || die "sample data not found: $DATA/mvtec_ad/bottle/test (pass --data DIR)"
DATA="$(cd "$DATA" && pwd)"
[ -n "$OUT" ] || OUT="$REPO/device-check-$(date -u +%Y%m%dT%H%M%SZ)"
[ -z "$BUNDLE" ] || [ -f "$BUNDLE/manifest.json" ] || die "--bundle $BUNDLE has no manifest.json"

# the CLI of the same environment as $PY
if [ -x "$(dirname "$PY")/clipinspect" ]; then
    CLI=("$(dirname "$PY")/clipinspect")
else
    CLI=("$PY" -c 'import sys; from edge_runtime.cli import main; sys.exit(main(sys.argv[1:]))')
fi

IMAGES=("$DATA/mvtec_ad/bottle/test")
[ -d "$DATA/kolektorsdd/commutator/test" ] && IMAGES+=("$DATA/kolektorsdd/commutator/test")
IMAGE_ARGS=()
for d in "${IMAGES[@]}"; do IMAGE_ARGS+=(--images "$d"); done

if [ "$DRY" -eq 0 ]; then
    if ! why="$("$PY" -c 'import sys, torch
sys.exit(0) if torch.cuda.is_available() else print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}")
sys.exit(1)' 2>&1)"; then
        echo "device_check: no CUDA GPU visible to torch (${why##*$'\n'}); this check needs one, nothing was run" >&2
        exit 3
    fi
    mkdir -p "$OUT/logs" || die "cannot create $OUT"
    OUT="$(cd "$OUT" && pwd)"
    printf 'step\tstatus\tseconds\tlog\n' >"$OUT/summary.tsv"
fi

START=$SECONDS
N=0
FAILED=0

# step NAME CMD...: run CMD (cwd = repo root) within the remaining budget, log, record
step() {
    local name="$1"
    shift
    N=$((N + 1))
    local log
    log="$(printf '%02d' "$N")-$name.log"
    if [ "$DRY" -eq 1 ]; then
        printf 'step %02d %-16s %s\n' "$N" "$name" "$*"
        return 0
    fi
    local left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -le 5 ]; then
        printf '%s\tskipped (budget)\t0\t-\n' "$name" >>"$OUT/summary.tsv"
        echo "device_check: $name skipped: the ${BUDGET}s budget is spent" >&2
        FAILED=1
        return 1
    fi
    local t0=$SECONDS rc
    echo "device_check: $name ..." >&2
    (cd "$REPO" && timeout "$left" "$@") >"$OUT/logs/$log" 2>&1
    rc=$?
    local status="ok"
    if [ "$rc" -eq 124 ]; then status="timeout"; elif [ "$rc" -ne 0 ]; then status="failed (exit $rc)"; fi
    [ "$rc" -eq 0 ] || FAILED=1
    printf '%s\t%s\t%s\tlogs/%s\n' "$name" "$status" "$((SECONDS - t0))" "$log" >>"$OUT/summary.tsv"
    echo "device_check: $name $status in $((SECONDS - t0)) s" >&2
    return "$rc"
}

env_report() {
    {
        date -u +"%Y-%m-%dT%H:%M:%SZ"
        uname -a
        nvidia-smi 2>&1 || echo "nvidia-smi: not available"
        [ -f /etc/nv_tegra_release ] && cat /etc/nv_tegra_release
        "$PY" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "onnxruntime", "transformers", "peft", "tensorrt", "pycuda", "numpy", "cv2"):
    try:
        mod = importlib.import_module(name)
        print(name, getattr(mod, "__version__", "?"))
    except Exception as exc:  # noqa: BLE001 - report, never fail here
        print(name, "not importable:", type(exc).__name__)
import torch
print("cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
import onnxruntime
print("ort providers", onnxruntime.get_available_providers())
EOF
    } >"$OUT/env.txt" 2>&1
}

has_trt() {
    "$PY" -c 'import tensorrt, pycuda.driver' >/dev/null 2>&1
}

has_ort_cuda() {
    "$PY" -c 'import sys, onnxruntime as o; sys.exit(0 if "CUDAExecutionProvider" in o.get_available_providers() else 1)' >/dev/null 2>&1
}

has_rawframe() {
    "$PY" -m export.random_bundle --help 2>/dev/null | grep -q -- '--input-format'
}

RGB="${BUNDLE:-$OUT/bundles/vit-b-16}"
RAW="$OUT/bundles/vit-b-16-bayer-4k"
RAW_SOURCE="synthetic://?width=4096&height=2160&pixel_format=BayerRG8"

if [ "$DRY" -eq 1 ]; then
    echo "device_check --dry-run: python $PY, data $DATA, out ${OUT}, budget ${BUDGET}s"
    echo "check: torch sees a CUDA GPU (else one line, exit 3)"
    echo "env: GPU, driver and package versions -> $OUT/env.txt"
else
    env_report
fi
step gpu-tests "$PY" -m pytest -q -p no:cacheprovider -m gpu tests --junitxml="$OUT/gpu-tests.xml"
if [ -z "$BUNDLE" ]; then
    step bundle "$PY" -m export.random_bundle "$RGB" --arch vit-b-16 --force
fi
step torch-drift "$PY" benchmarks/torch_cuda_drift.py --bundle "$RGB" "${IMAGE_ARGS[@]}" \
    --max-images "$MAX_IMAGES" --json "$OUT/torch_cuda_drift.json"
COMPARE="ort-cpu:fp32"
if [ "$DRY" -eq 1 ] || has_ort_cuda; then COMPARE="$COMPARE,ort-cuda:fp32"; fi
step bench "${CLI[@]}" bench --bundle "$RGB" --compare "$COMPARE" --mode model --iterations 30 --warmup 5 \
    --no-progress --out "$OUT/bench"

if [ "$DRY" -eq 1 ]; then
    echo "# only where 'import tensorrt, pycuda.driver' works:"
fi
if [ "$DRY" -eq 1 ] || has_trt; then
    TRT_COMPARE="trt:fp16,trt:int8"
    if [ "$DRY" -eq 1 ] || has_ort_cuda; then TRT_COMPARE="$TRT_COMPARE,ort-cuda:fp32"; fi
    step engine-fp16 "${CLI[@]}" build-engine --bundle "$RGB" --precision fp16 --timing-cache "$OUT/timing.cache"
    step calibrate "${CLI[@]}" calibrate --bundle "$RGB" --images "$DATA/mvtec_ad/bottle" --num 32
    step engine-int8 "${CLI[@]}" build-engine --bundle "$RGB" --precision int8 --onnx int8 \
        --timing-cache "$OUT/timing.cache"
    step verify-trt-fp16 "${CLI[@]}" verify-bundle --bundle "$RGB" --images "${IMAGES[0]}" --backend trt \
        --precision fp16 --max-images "$MAX_IMAGES" --table
    step verify-trt-int8 "${CLI[@]}" verify-bundle --bundle "$RGB" --images "${IMAGES[0]}" --backend trt \
        --precision int8 --max-images "$MAX_IMAGES" --table
    step trt-tests "$PY" -m pytest -q -p no:cacheprovider -m tensorrt tests --junitxml="$OUT/trt-tests.xml"
    step bench-trt "${CLI[@]}" bench --bundle "$RGB" --compare "$TRT_COMPARE" --mode model --iterations 50 \
        --warmup 10 --no-progress --out "$OUT/bench-trt"
    if [ "$DRY" -eq 1 ]; then
        echo "# only where 'python -m export.random_bundle --input-format' exists:"
    fi
    if [ "$DRY" -eq 1 ] || has_rawframe; then
        step raw-bundle "$PY" -m export.random_bundle "$RAW" --arch vit-b-16 --force \
            --input-format bayer_rg8 --input-size 4096x2160
        step raw-engine-fp16 "${CLI[@]}" build-engine --bundle "$RAW" --precision fp16 --timing-cache "$OUT/timing.cache"
        step raw-bench-trt "${CLI[@]}" bench --bundle "$RAW" --backend trt --precision fp16 --source "$RAW_SOURCE" \
            --rounds 3 --no-progress --out "$OUT/bench-raw"
    fi
fi

if [ "$DRY" -eq 1 ]; then
    echo "device_check --dry-run: $N steps; nothing was run"
    exit 0
fi
echo "device_check: $((SECONDS - START)) s; results in $OUT (summary.tsv, logs/)" >&2
column -t -s "$(printf '\t')" "$OUT/summary.tsv" 2>/dev/null || cat "$OUT/summary.tsv"
exit "$FAILED"
