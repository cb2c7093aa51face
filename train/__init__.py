"""Desktop training side: data sets, CLIP + LoRA model (AnomalyCLIP-style), training, eval, merge."""
