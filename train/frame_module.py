"""The ONE definition of raw-frame preprocessing, as a torch module.

`FramePreprocess` turns the camera's uint8 frame ([N,H,W] Bayer/mono or [N,H,W,3] RGB/BGR,
exactly as delivered) into the model's normalised float NCHW input. Export puts it in front
of the model in the ONNX graph (so TensorRT runs it on the GPU); training runs the same
module on frames mosaiced into the same raw layout (`RawFrameModel`), so training, ONNX and
the device compute the same thing by construction.

Graph, in order (every op TensorRT runs natively):
  Cast(uint8 -> float32)          first op on the uint8 input: TensorRT lets uint8 feed only a Cast
  Slice                           ROI, trimmed to whole bin blocks (absent when none is needed)
  ReduceMean (rows), MatMul (cols) bin whole Bayer quads (or RGB triples) into blocks
  Transpose, MatMul               demosaic: each output pixel = mean of its colour's samples in its block
  MatMul, MatMul                  area resample of the binned grid to the model size (< 2x shrink)
  Mul, Sub, Div                   /255, mean/std
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edge_runtime.rawframe import FORMATS, frame_shape, make_plan


class FramePreprocess(nn.Module):
    """uint8 camera frame -> normalised float32 [N,3,h,w] at the model size."""

    def __init__(
        self,
        input_format: str,
        input_size_hw: Sequence[int],
        model_hw: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        roi: Sequence[int] | None = None,
        color_order: str = "RGB",
    ) -> None:
        super().__init__()
        self.plan = make_plan(input_format, input_size_hw, model_hw, roi)
        self.frame_shape = frame_shape(input_format, input_size_hw)
        self.channels = FORMATS[input_format][1]
        colour = torch.from_numpy(self.plan.colour_weight())
        if color_order == "BGR":
            colour = colour.flip(1)
        self.register_buffer("colour", colour, persistent=False)
        pw = self.plan.pattern_hw[1]
        phase = torch.zeros(self.plan.bx, pw)
        for j in range(pw):
            phase[j::pw, j] = 1.0 / (self.plan.bx // pw)
        self.register_buffer("phase", phase, persistent=False)
        ay, axt = self.plan.resample_weights()
        self.register_buffer("ay", torch.from_numpy(ay), persistent=False)
        self.register_buffer("axt", torch.from_numpy(axt), persistent=False)
        # Same arithmetic order as edge_runtime.preprocess.normalize: (x * (1/255) - mean) / std.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        p = self.plan
        ph, pw = p.pattern_hw
        (gh, gw), ky, kx = p.grid_hw, p.by // ph, p.bx // pw
        x = frame.to(torch.float32)  # must stay the first op (see module docstring)
        n = x.shape[0]
        # Interleaved RGB is read as one plane of H x (W*3) samples, so RGB and Bayer bin alike
        # and no full-frame transpose is needed.
        x = x.reshape(n, self.frame_shape[0], self.frame_shape[1] * self.channels)
        if (p.y0, p.y1) != (0, self.frame_shape[0]):
            x = x[:, p.y0 : p.y1]
        if (p.x0, p.x1) != (0, self.frame_shape[1] * self.channels):
            x = x[:, :, p.x0 : p.x1]
        # Rows first: averaging runs of whole rows is the cheapest pass over the full frame
        # (measured in ONNX Runtime: cheaper than any column-first order). Means, not sums,
        # keep every value in 0..255, so an FP16 engine cannot overflow at any bin factor.
        x = x.reshape(n, gh, ky, ph * (p.x1 - p.x0)).mean(dim=2)
        # Columns as a MatMul with a 0/(1/kx) matrix: ONNX Runtime reduces a strided middle
        # axis several times slower than this one thin GEMM.
        x = torch.matmul(x.reshape(n, gh, ph, gw, kx * pw), self.phase)  # [n, gh, ph, gw, pw] block means
        x = x.permute(0, 1, 3, 2, 4).reshape(n, gh, gw, ph * pw)
        x = torch.matmul(x, self.colour).permute(0, 3, 1, 2)  # [n, 3, gh, gw] colour means
        x = torch.matmul(torch.matmul(self.ay, x), self.axt)
        x = x * (1.0 / 255.0)
        return (x - self.mean) / self.std


class RawFrameModel(nn.Module):
    """AnomalyCLIP fed raw frames: forward(frames uint8, text_embeddings) -> AnomalyOutput.
    What training, validation and eval run for a raw-frame run, and what export wraps."""

    def __init__(self, model: Any, frame: FramePreprocess) -> None:
        super().__init__()
        self.model = model
        self.frame = frame

    def forward(self, frames: torch.Tensor, text_embeddings: torch.Tensor) -> Any:
        return self.model(self.frame(frames), text_embeddings)

    def text_embeddings(self) -> torch.Tensor:
        return self.model.text_embeddings()


def frame_preprocess(
    model_config: Any, image_size: Sequence[int], mean: Sequence[float], std: Sequence[float]
) -> FramePreprocess:
    """The FramePreprocess of a raw-frame run (`model_config.frame` must be set)."""
    fmt, size_hw, roi = model_config.frame
    return FramePreprocess(fmt, size_hw, tuple(image_size), mean, std, roi=roi)


def raw_frame_model(
    model: Any, model_config: Any, image_size: Sequence[int], mean: Sequence[float], std: Sequence[float]
) -> Any:
    """`model` wrapped in RawFrameModel for a raw-frame run (config.model.frame); else `model`."""
    if model_config.frame is None:
        return model
    frame = frame_preprocess(model_config, image_size, mean, std)
    device = next(model.parameters()).device
    return RawFrameModel(model, frame.to(device))


def batch_input(batch: dict[str, Any]) -> torch.Tensor:
    """The model input of a data loader batch: raw frames (RawFrameSamples) or normalised
    model-size pixels (train.data.AnomalyDataset)."""
    return batch["frames"] if "frames" in batch else batch["pixel_values"]


def raw_frame_samples(
    samples: Any,
    model_config: Any,
    image_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    augment: Any = None,
    seed: int = 0,
) -> RawFrameSamples:
    """The raw-frame data set of `samples` for a run's model config (and augmentation)."""
    from train.data import AnomalyDataset

    fmt, size_hw, roi = model_config.frame
    return RawFrameSamples(
        AnomalyDataset(samples, tuple(image_size), mean, std), fmt, size_hw, roi=roi, augment=augment, seed=seed
    )


class RawFrameSamples(torch.utils.data.Dataset):
    """A training data set whose images are delivered as raw frames of the station's camera.

    `base` is a train.data.AnomalyDataset (its samples, model size); each image is read,
    resized to the frame size, optionally augmented there (`augment`, a train.config
    AugmentConfig: geometric and photometric ops act on the scene, before the sensor's
    mosaic, and the frame is re-quantised to uint8 as a camera delivers it), and mosaiced
    (edge_runtime.rawframe.mosaic_frame), so the model learns through exactly the
    demosaic/bin/resize the device's graph runs. Masks follow the same geometry: frame size,
    then the region of the frame the graph maps onto the model grid (ROI, trimmed to whole
    bin blocks: edge_runtime.rawframe.frame_region), then the model size, so the pixel loss
    lines up with the map."""

    def __init__(
        self,
        base: Any,
        input_format: str,
        input_size_hw: Sequence[int],
        roi: Sequence[int] | None = None,
        augment: Any = None,
        seed: int = 0,
    ) -> None:
        from edge_runtime.rawframe import frame_region

        self.base = base
        self.input_format = input_format
        self.input_size_hw = tuple(int(v) for v in input_size_hw)
        self.roi = tuple(int(v) for v in roi) if roi is not None else None
        self.region = frame_region(input_format, self.input_size_hw, base.image_size, self.roi)
        self.augment = augment if augment is not None and augment.enabled else None
        self.seed = int(seed)
        self.epoch = 0  # set by train.augment.set_epoch: augmentation draws depend on (seed, epoch, index)

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str) -> Any:  # samples, image_size, mean, std
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def _scene(self, index: int) -> tuple[Any, Any, tuple[int, int]]:
        """(uint8 RGB at the frame size, float32 mask at the frame size, original (h, w))."""
        import numpy as np

        from edge_runtime.imageio import read_rgb
        from edge_runtime.rawframe import resize_to_frame
        from train.data import load_mask, resize_mask

        s = self.base.samples[index]
        rgb = read_rgb(s.image_path)
        orig = rgb.shape[:2]
        mask = resize_mask(load_mask(s, orig), self.input_size_hw)
        rgb = resize_to_frame(rgb, self.input_size_hw)  # edge_runtime.rawframe.to_frame, before its mosaic
        if self.augment is not None:
            from train.augment import apply, draw

            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            img, mask = apply(rgb.astype(np.float32) / 255.0, mask, draw(self.augment, rng), rng)
            rgb = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
        return rgb, mask, orig

    def _region(self, image: Any) -> Any:
        y0, y1, x0, x1 = self.region
        return image[y0:y1, x0:x1]

    def image_uint8(self, index: int) -> Any:
        """The model-size RGB view of the part of the frame the model sees (heatmap overlays)."""
        import cv2

        h, w = self.base.image_size
        return cv2.resize(self._region(self._scene(index)[0]), (w, h), interpolation=cv2.INTER_AREA)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from edge_runtime.rawframe import mosaic_frame
        from train.data import resize_mask

        s = self.base.samples[index]
        rgb, mask, orig = self._scene(index)
        mask = resize_mask(self._region(mask), self.base.image_size)
        return {
            "orig_hw": torch.tensor(orig, dtype=torch.int64),
            "frames": torch.from_numpy(mosaic_frame(rgb, self.input_format)),
            "label": torch.tensor(s.label, dtype=torch.int64),
            "mask": torch.from_numpy(mask),
            "has_mask": torch.tensor(bool(s.pixel_gt)),
            "index": index,
        }
