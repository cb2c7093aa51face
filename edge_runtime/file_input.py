"""An image file as a bundle's input: the one function enrollment, the few-shot bank, the
input profile, parity checks and training's raw-frame data all read image files through.

For a model-size bundle the file is prepared as `run` prepares a camera image
(edge_runtime.preprocess.prepare); for a raw-frame bundle it becomes the frame its camera
would deliver (edge_runtime.rawframe.to_frame: resized to the frame size, mosaiced into the
pixel format), which the graph then crops, demosaics and resizes itself. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.bundle import PreprocessSpec
from edge_runtime.imageio import read_rgb
from edge_runtime.preprocess import normalize, prepare


def image_frame(path: str | Path, pre: PreprocessSpec) -> tuple[np.ndarray, str]:
    """(pixels, GenICam pixel format): the file as the camera image a station with this bundle
    sees; a raw-frame bundle's frame, or the RGB image itself for model-size bundles."""
    rgb = read_rgb(path)
    if pre.input_layout == "frame_uint8":
        from edge_runtime.rawframe import pixel_format, to_frame

        return to_frame(rgb, pre.input_format, pre.input_size), pixel_format(pre.input_format)
    return rgb, "RGB8"


def image_input(path: str | Path, pre: PreprocessSpec) -> np.ndarray:
    """One uint8 item of the bundle's `image` input: the raw frame for raw-frame bundles, the
    model-size HxWx3 image (the model's colour order) otherwise."""
    if pre.input_layout == "frame_uint8":
        return image_frame(path, pre)[0]
    return prepare(read_rgb(path), tuple(pre.image_size), color_order=pre.color_order, method=pre.resize)


def to_model_input(batch_u8: np.ndarray, pre: PreprocessSpec) -> np.ndarray:
    """A uint8 batch of `image_input` items -> what the bundle's `image` input takes."""
    if pre.input_layout == "NCHW_float32":
        return normalize(batch_u8, pre.mean, pre.std)
    return np.ascontiguousarray(batch_u8)


def model_input(path: str | Path, pre: PreprocessSpec) -> np.ndarray:
    """One image file as the bundle's `image` input, batch of 1."""
    return to_model_input(image_input(path, pre)[None], pre)
