"""folder:// replay: bad files are counted by reason and skipped; the loop keeps going."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.errors import SourceError
from edge_runtime.imageio import read_rgb
from edge_runtime.sources import open_source


def write_png(path: Path, h: int, w: int, value: int) -> None:
    img = np.full((h, w, 3), value, np.uint8)
    img[0, 0] = (value, 0, 255 - value)  # a marker to tell files apart after decoding
    assert cv2.imwrite(str(path), img)


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    write_png(tmp_path / "a_good.png", 24, 32, 10)
    (tmp_path / "b_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png" * 4)
    (tmp_path / "c_empty.png").write_bytes(b"")
    write_png(tmp_path / "d_huge.png", 240, 320, 30)  # over max_pixels below
    write_png(tmp_path / "e_odd.png", 25, 31, 40)  # another size than the stream
    write_png(tmp_path / "f_good.jpg", 24, 32, 50)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_bad_files_are_counted_by_reason_and_the_loop_continues(messy_folder):
    with open_source(f"folder://{messy_folder}?loop=1", {"max_pixels": 20_000}) as src:
        frames = [f for _, f in zip(range(5), src.frames())]
        stats = src.stats()
    # Good files in name order, three passes' worth (the 5th frame is in pass 3).
    assert [Path(f.meta["path"]).name for f in frames] == ["a_good.png", "f_good.jpg"] * 2 + ["a_good.png"]
    assert [f.frame_id for f in frames] == [0, 1, 2, 3, 4]
    assert all(f.image.shape == (24, 32, 3) and f.meta["pixel_format"] == "RGB8" for f in frames)
    assert np.array_equal(frames[0].image, read_rgb(messy_folder / "a_good.png"))
    assert stats["corrupt"] == 2 and stats["empty"] == 2 and stats["huge"] == 2 and stats["odd_size"] == 2
    assert stats["delivered"] == 5 and stats["passes"] == 2


def test_without_loop_the_replay_ends_after_one_pass(messy_folder):
    with open_source(f"folder://{messy_folder}", {"max_pixels": 20_000}) as src:
        frames = list(src.frames())
        assert src.ended
    assert len(frames) == 2
    assert src.stats()["corrupt"] == 1


def test_a_folder_of_only_broken_files_fails_instead_of_spinning(tmp_path):
    (tmp_path / "x.png").write_bytes(b"garbage")
    (tmp_path / "y.png").write_bytes(b"")
    with open_source(f"folder://{tmp_path}?loop=true") as src:
        with pytest.raises(SourceError, match=r"no readable image in .*corrupt=1"):
            list(src.frames())


def test_fps_pacing(tmp_path):
    for i in range(4):
        write_png(tmp_path / f"{i}.png", 8, 8, i * 10)
    t0 = time.monotonic()
    with open_source(f"folder://{tmp_path}?fps=40") as src:
        assert len(list(src.frames())) == 4
    assert time.monotonic() - t0 >= 3 / 40 - 0.01


def test_bare_directory_path_is_a_folder_source(tmp_path):
    write_png(tmp_path / "0.png", 8, 8, 1)
    with open_source(str(tmp_path)) as src:
        assert len(list(src.frames())) == 1


@pytest.mark.parametrize(
    "make, message", [(lambda p: p / "nope", "image folder not found"), (lambda p: p, "no image files")]
)
def test_missing_or_empty_folder(tmp_path, make, message):
    with pytest.raises(SourceError, match=message):
        open_source(f"folder://{make(tmp_path)}")


def test_real_sample_images(mvtec_root):
    folder = mvtec_root / "bottle" / "test" / "broken_large"
    if not folder.is_dir():
        pytest.skip(f"{folder} not in the sample data")
    with open_source(f"folder://{folder}") as src:
        first = next(iter(src.frames()))
    assert first.image.ndim == 3 and first.image.shape[2] == 3 and first.image.dtype == np.uint8
