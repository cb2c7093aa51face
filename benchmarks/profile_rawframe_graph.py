"""What the in-graph preprocessing of a raw-frame bundle costs, from ONNX Runtime's own profile.

    python benchmarks/profile_rawframe_graph.py --bundle B4K [--runs 5] [--threads N]

Runs the bundle's ONNX on a random frame with ONNX Runtime profiling on and splits each
run's kernel time into the preprocessing nodes (everything before the vision tower's patch
Conv: Cast, Slice, ReduceSum, MatMul, ... of train/frame_module.py) and the rest. Both parts
are timed inside the same runs, so their ratio holds on a busy shared machine where
back-to-back wall-clock comparisons of two bundles do not.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))


def preprocessing_nodes(model_path: Path) -> set[str]:
    """Names of the nodes computed before the first Conv (the patch embedding)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    names = set()
    for node in graph.node:
        if node.op_type == "Conv":
            break
        names.add(node.name)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    import onnxruntime as ort

    from edge_runtime.bench import fixed_input
    from edge_runtime.bundle import load_bundle

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = ORT default)")
    args = p.parse_args(argv)
    bundle = load_bundle(args.bundle, verify=False)
    path = bundle.model_path("fp32")
    pre_nodes = preprocessing_nodes(path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.enable_profiling = True
    so.profile_file_prefix = str(Path("/tmp") / "rawframe_profile")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feeds = {"image": fixed_input(bundle)}
    if bundle.text_embeddings() is not None:
        feeds["text_embeddings"] = bundle.text_embeddings()
    for _ in range(args.runs + 1):
        sess.run(None, feeds)
    events = json.loads(Path(sess.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"][1:]  # first run = warm-up
    pre_ms, rest_ms = [], []
    for r in runs:
        t0, t1 = r["ts"], r["ts"] + r["dur"]
        pre = rest = 0.0
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and t0 <= e["ts"] <= t1:
                node = e["name"][: -len("_kernel_time")]
                if node in pre_nodes or any(node.startswith(n) for n in pre_nodes if n):
                    pre += e["dur"] / 1e3
                else:
                    rest += e["dur"] / 1e3
        pre_ms.append(pre)
        rest_ms.append(rest)
    share = [a / (a + b) for a, b in zip(pre_ms, rest_ms)]
    print(
        f"{path.name}: {len(pre_nodes)} preprocessing nodes; per run p50: preprocessing {np.median(pre_ms):.1f} ms, "
        f"model {np.median(rest_ms):.1f} ms; preprocessing share {100 * np.median(share):.1f} % "
        f"(-> model-only would be {1 / (1 - np.median(share)):.3f}x the same graph without it)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
