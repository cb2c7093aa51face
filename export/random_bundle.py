"""A bundle with RANDOM weights at a real architecture's size, for latency benchmarks.

Inference speed depends on shapes, not on weight values, so `bench` and the engine build can
be measured on a ViT-B/16 (or ViT-L/14-336) bundle without downloading or training a CLIP.
The bundle goes through the same export as a trained model (merged folder -> ONNX ->
manifest), so what is benchmarked is the real graph. Its scores mean nothing: the model id
starts with 'random-' and the threshold method says so.

    python -m export.random_bundle OUT --arch vit-b-16
    python -m export.random_bundle OUT --input-format bayer_rg8 --input-size 4096x2160   # raw-frame
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from edge_runtime.bundle import Bundle
from edge_runtime.errors import ClipInspectError, DataError
from export.onnx_export import ExportOptions

log = logging.getLogger(__name__)

RANDOM_THRESHOLD_METHOD = "none: random weights (benchmark bundle), scores are meaningless"


def default_merged_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir).absolute()
    return out.parent / f"{out.name}-merged"


def make_random_bundle(
    out_dir: str | Path,
    arch: str = "vit-b-16",
    seed: int = 0,
    *,
    options: ExportOptions = ExportOptions(),
    merged_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Bundle:
    """Random-init CLIP of `arch` -> AnomalyCLIP (no LoRA) -> merged folder -> bundle.

    The merged folder (default `<out>-merged` next to the bundle) is kept: the manifest
    points at it for the torch reference backend."""
    import torch

    from export.exporter import export_bundle
    from train.clip_loading import load_clip
    from train.clip_presets import make_clip_folder
    from train.merged import MODEL_JSON, save_merged
    from train.model import AnomalyCLIP

    merged = Path(merged_dir).absolute() if merged_dir is not None else default_merged_dir(out_dir)
    if merged.exists() and any(merged.iterdir()):
        if not (merged / MODEL_JSON).is_file():
            raise DataError(f"{merged} exists and is not a merged model folder; choose another --merged-dir")
        if not overwrite:
            raise DataError(f"merged folder {merged} already exists; pass --force to rebuild it")
        shutil.rmtree(merged)  # stale weights must not survive a rebuild
    merged.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=merged.parent, prefix=f".{merged.name}.clip-") as tmp:
        log.info("building random-init CLIP %s (seed %d)", arch, seed)
        clip_dir = make_clip_folder(Path(tmp) / "clip", arch=arch, seed=seed)
        clip, tokenizer, size, mean, std = load_clip(clip_dir)
        torch.manual_seed(seed)
        model = AnomalyCLIP(clip, tokenizer, image_size=size).eval()
        save_merged(
            model,
            merged,
            clip_source=f"random:{arch}:seed={seed}",
            mean=mean,
            std=std,
            name=f"random-{arch}",
            threshold_method=RANDOM_THRESHOLD_METHOD,
        )
    del model, clip
    return export_bundle(merged, out_dir, options, overwrite=overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    from export.commands.export import add_frame_arguments, frame_options
    from train.clip_presets import ARCHS

    p = argparse.ArgumentParser(
        prog="python -m export.random_bundle", description="Write a random-weight bundle for latency benchmarks."
    )
    p.add_argument("out", help="bundle folder to write")
    p.add_argument("--arch", default="vit-b-16", choices=ARCHS, help="CLIP architecture (default vit-b-16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--merged-dir", default=None, help="where the merged model goes (default: <out>-merged)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--dynamic-batch", action="store_true")
    p.add_argument("--float-input", action="store_true")
    p.add_argument("--bake-text", action="store_true")
    p.add_argument(
        "--bank-shots",
        type=int,
        default=0,
        metavar="K",
        help="few-shot memory_bank input for up to K good images (default 0: none)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing bundle and merged folder")
    add_frame_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        options = ExportOptions(
            opset=args.opset,
            dynamic_batch=args.dynamic_batch,
            float_input=args.float_input,
            bake_text=args.bake_text,
            bank_shots=args.bank_shots,
            **frame_options(args),
        )
        bundle = make_random_bundle(
            args.out, args.arch, args.seed, options=options, merged_dir=args.merged_dir, overwrite=args.force
        )
    except ClipInspectError as exc:
        print(f"random_bundle: error: {exc}", file=sys.stderr)
        return exc.exit_code
    m = bundle.manifest
    frame = (
        f", frame {m.preprocess.input_format} {m.preprocess.input_size[1]}x{m.preprocess.input_size[0]}"
        if m.preprocess.input_size
        else ""
    )
    print(
        f"bundle {bundle.root} ({m.model_id}, {m.preprocess.image_size[0]}x{m.preprocess.image_size[1]}{frame}, "
        f"{m.files[m.model_file].bytes / 1e6:.1f} MB ONNX); RANDOM weights: for benchmarks only"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
