"""Random-init CLIP folders in Hugging Face format, for tests and benchmarks without downloads.

`make_clip_folder` writes what `CLIPModel.from_pretrained` and `AutoTokenizer.from_pretrained`
read: config.json + model.safetensors, a word-level tokenizer (tokenizer.json) whose small
vocabulary covers the prompt, object and defect words, and preprocessor_config.json with
CLIP's mean/std. The weights are RANDOM: the folder is marked as a test model in its config
(`clipinspect_random_test_model`) and README so nobody mistakes it for a trained CLIP.

Archs: "tiny" (64 px, patch 8, width 64, 4 layers per tower: trains in seconds on a CPU),
"vit-b-16" (the openai/clip-vit-base-patch16 shapes, 224 px) and "vit-l-14-336" (the
openai/clip-vit-large-patch14-336 shapes) for export/latency benchmarks with real sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_runtime.errors import ConfigError
from edge_runtime.preprocess import CLIP_MEAN, CLIP_STD

BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"
# eos id must not be 2: transformers' CLIPTextModel treats eos_token_id == 2 as the legacy
# "argmax of ids" pooling. Padding uses EOS as the original CLIP tokenizer does.
SPECIAL = (BOS, EOS, UNK)

# Prompt templates, object/category names (MVTec AD, VisA, Kolektor) and defect words.
_WORDS = """
a an the photo of picture image close up view cropped object flawless perfect normal good
unblemished damaged broken defective anomalous abnormal faulty flawed with without and
bottle cable capsule carpet grid hazelnut leather metal nut pill screw tile toothbrush
transistor wood zipper candle capsules cashew chewinggum chewing gum fryum macaroni1
macaroni2 pcb1 pcb2 pcb3 pcb4 pipe_fryum commutator surface part product item
crack cracked scratch scratched hole holes cut contamination contaminated stain color
fold bent large small missing misplaced swapped poke print glue squeeze fabric liquid rough
combined faulty_imprint pill_type manipulated_front scratch_head scratch_neck thread_side
thread_top broken_large broken_small broken_teeth fabric_border fabric_interior split_teeth
squeezed_teeth cable_swap cut_inner_insulation cut_outer_insulation missing_cable missing_wire
poke_insulation bent_lead cut_lead damaged_case misplaced gray_stroke oil glue_strip
metal_contamination dent spot chip burnt melt bubble
""".split()


def _tower(width: int, layers: int, heads: int, mlp_ratio: int = 4, **extra: int) -> dict[str, int]:
    """One transformer tower's CLIPTextConfig/CLIPVisionConfig sizes (MLP width = mlp_ratio x width)."""
    return dict(
        hidden_size=width,
        intermediate_size=mlp_ratio * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        **extra,
    )


_ARCHS: dict[str, dict[str, Any]] = {
    "tiny": {
        "text": _tower(64, 4, 4, mlp_ratio=2, max_position_embeddings=32),
        "vision": _tower(64, 4, 4, mlp_ratio=2, image_size=64, patch_size=8),
        "projection_dim": 32,
    },
    # openai/clip-vit-base-patch16
    "vit-b-16": {
        "text": _tower(512, 12, 8, max_position_embeddings=77),
        "vision": _tower(768, 12, 12, image_size=224, patch_size=16),
        "projection_dim": 512,
    },
    # openai/clip-vit-large-patch14-336
    "vit-l-14-336": {
        "text": _tower(768, 12, 12, max_position_embeddings=77),
        "vision": _tower(1024, 24, 16, image_size=336, patch_size=14),
        "projection_dim": 768,
    },
}

ARCHS = tuple(_ARCHS)
README = """# RANDOM TEST MODEL: not a trained CLIP

Written by `clipinspect make-tiny-clip` (arch `{arch}`, seed {seed}). The weights are random and
the tokenizer is a small word-level vocabulary, so this model detects nothing useful until it is
trained, and even then only on the data it saw. It exists so the pipeline (train, merge, export,
calibrate, run) can be tested offline. For real use pass a real CLIP, e.g.
`--clip openai/clip-vit-base-patch16`.
"""


def vocabulary() -> list[str]:
    """Token list: specials first (ids 0..2), then the words, in a stable order."""
    seen: dict[str, None] = {}
    for w in _WORDS:
        seen.setdefault(w.lower(), None)
    return [*SPECIAL, *seen]


def make_tokenizer(max_length: int):
    """A word-level fast tokenizer that lower-cases, splits on whitespace/punctuation and wraps
    each text in BOS ... EOS, like CLIP's."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=EOS,
        model_max_length=max_length,
    )


def clip_config(arch: str = "tiny"):
    """The transformers CLIPConfig of preset `arch` (ConfigError for an unknown one)."""
    from transformers import CLIPConfig

    if arch not in _ARCHS:
        raise ConfigError(f"unknown CLIP arch '{arch}' (known: {', '.join(ARCHS)})")
    spec = _ARCHS[arch]
    ids = {tok: i for i, tok in enumerate(SPECIAL)}
    text = dict(
        spec["text"],
        vocab_size=len(vocabulary()) if arch == "tiny" else 49408,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[EOS],
        projection_dim=spec["projection_dim"],
    )
    vision = dict(spec["vision"], projection_dim=spec["projection_dim"])
    # every openai CLIP uses quick_gelu (CLIPConfig's default too; stated for clarity)
    text["hidden_act"] = vision["hidden_act"] = "quick_gelu"
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=spec["projection_dim"])


def make_clip_folder(out_dir: str | Path, arch: str = "tiny", seed: int = 0) -> Path:
    """Write a random-init CLIP of `arch` to `out_dir` (created) and return the folder."""
    import torch
    from transformers import CLIPModel

    from train.clip_loading import write_preprocessor_config

    config = clip_config(arch)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.config.clipinspect_random_test_model = {"arch": arch, "seed": seed}
    model.save_pretrained(out, safe_serialization=True)
    make_tokenizer(config.text_config.max_position_embeddings).save_pretrained(out)
    size = config.vision_config.image_size
    write_preprocessor_config(out, (size, size), CLIP_MEAN, CLIP_STD)
    (out / "README.md").write_text(README.format(arch=arch, seed=seed), encoding="utf-8")
    return out
