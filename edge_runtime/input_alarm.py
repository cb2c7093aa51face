"""Input alarm: is the camera still showing what the station was enrolled on?

Per frame, a few cheap statistics of the (ROI-cropped) camera image are compared with the
range seen on the enrolment images (the bundle's `input_profile.json`):

  brightness  mean gray level (0..255)                 lens covered, light failed
  contrast    log of the gray standard deviation       fog, glare, covered lens
  sharpness   log of the variance of the Laplacian     defocus, motion blur
  red, blue   mean R/G and B/G ratios (colour images)  lighting colour, white balance
  layout      correlation of a 16x16 gray thumbnail    camera moved, part missing
              with the enrolment images' mean one       (only as tight as the enrolment
                                                        images' own layouts agree)

The image is first subsampled by striding to about `target_side` px on its long side (a
view: no full-frame copy or debayer; Bayer frames are split into their four sites), so the
cost does not grow with the sensor (`python -m edge_runtime.input_alarm bench`). Striding is
deliberate: without anti-aliasing, fine detail folds into the small image, so the Laplacian
still sees defocus that an area resize would hide. Profiles and frames must come from
images of the same size (the station's own camera at its ROI).

A statistic is out of range when it leaves [min - k*sd, max + k*sd] of the enrolment values
(sd floored per statistic, since a handful of good images understates the spread). The alarm
rises after `raise_after` consecutive out-of-range frames and clears after as many good ones,
so one odd frame does not flap the status topic. `StationMonitor` also keeps the rolling mean
of OK scores, so score drift shows before false rejects climb.

    python -m edge_runtime.input_alarm profile --bundle B --images good/ --out B2
    python -m edge_runtime.input_alarm bench
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import BundleError, ClipInspectError, ConfigError, DataError

log = logging.getLogger(__name__)

PROFILE_FILE = "input_profile.json"
PROFILE_SCHEMA = "clipinspect.input_profile"
STATS = ("brightness", "contrast", "sharpness", "red", "blue", "layout")
THUMB = 16  # side of the layout thumbnail
# The layout check is used only when the enrolment images agree on a layout (every image's
# correlation with the others' mean at least this); parts that sit anywhere would false-alarm.
LAYOUT_MIN_AGREEMENT = 0.8
# Smallest spread assumed per statistic (units as in STATS): gray levels, log units, ratio.
SD_FLOOR = {"brightness": 4.0, "contrast": 0.08, "sharpness": 0.5, "red": 0.03, "blue": 0.03, "layout": 0.02}
# Which site of a 2x2 Bayer cell holds R and B (G holds the other two): (row, col).
_BAYER_SITES = {
    "BayerRG8": ((0, 0), (1, 1)),
    "BayerBG8": ((1, 1), (0, 0)),
    "BayerGR8": ((0, 1), (1, 0)),
    "BayerGB8": ((1, 0), (0, 1)),
}


def _stride(shape: tuple[int, ...], target_side: int, even: bool = False) -> int:
    s = max(1, -(-max(shape[0], shape[1]) // max(8, target_side)))  # ceil: never above target_side
    return s + (s % 2) if even and s > 1 else s


def _planes(
    image: np.ndarray, pixel_format: str, target_side: int
) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """(gray float32 plane of a strided sample, mean (R, G, B) or None for a mono image)."""
    import cv2

    if image.dtype != np.uint8:
        raise DataError(f"input alarm: expected 8-bit pixels, got {image.dtype}")
    if image.ndim == 2 and pixel_format in _BAYER_SITES:
        s = _stride(image.shape, target_side, even=True)  # even: every sample lands on the same Bayer site
        cells = {(r, c): image[r::s, c::s] for r in (0, 1) for c in (0, 1)}
        h = min(p.shape[0] for p in cells.values())
        w = min(p.shape[1] for p in cells.values())
        cells = {k: v[:h, :w].astype(np.float32) for k, v in cells.items()}
        (rr, bb) = _BAYER_SITES[pixel_format]
        green = sum(v for k, v in cells.items() if k not in (rr, bb)) * 0.5
        red, blue = cells[rr], cells[bb]
        return 0.299 * red + 0.587 * green + 0.114 * blue, (float(red.mean()), float(green.mean()), float(blue.mean()))
    if image.ndim == 2:
        s = _stride(image.shape, target_side)
        return image[::s, ::s].astype(np.float32), None
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DataError(f"input alarm: cannot read an image of shape {image.shape}")
    s = _stride(image.shape, target_side)
    small = np.ascontiguousarray(image[::s, ::s, :3])  # uint8: a small copy, no float planes
    bgr = pixel_format.startswith("BGR")
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY).astype(np.float32)
    m = cv2.mean(small)[:3]
    r, g, b = (m[2], m[1], m[0]) if bgr else (m[0], m[1], m[2])
    return gray, (float(r), float(g), float(b))


def frame_stats(
    image: np.ndarray, pixel_format: str = "RGB8", target_side: int = 320, reference: np.ndarray | None = None
) -> dict[str, float]:
    """The statistics of one camera image (HxWx3 RGB/BGR, or 2-D mono/Bayer) as a dict;
    'layout' only with a `reference` thumbnail (the profile's)."""
    stats, gray = _measure(image, pixel_format, target_side)
    if reference is not None and len(reference):  # the thumbnail only when layout is checked
        stats["layout"] = float(_thumbnail(gray) @ np.asarray(reference, np.float32))
    return stats


def _thumbnail(gray: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm THUMB x THUMB thumbnail: its dot product is a correlation."""
    import cv2

    t = cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA).ravel()
    t = t - t.mean()
    return t / (float(np.linalg.norm(t)) + 1e-6)


def _measure(image: np.ndarray, pixel_format: str, target_side: int) -> tuple[dict[str, float], np.ndarray]:
    """(statistics, the small gray plane they came from: `_thumbnail` makes the layout
    fingerprint from it when one is wanted)."""
    import cv2

    gray, rgb_means = _planes(image, pixel_format, target_side)
    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=3)
    mean, std = (float(v[0][0]) for v in cv2.meanStdDev(gray))
    lap_sd = float(cv2.meanStdDev(lap)[1][0][0])
    out = {
        "brightness": mean,
        "contrast": math.log(std + 1.0),
        "sharpness": math.log(lap_sd * lap_sd + 1.0),
    }
    if rgb_means is not None:
        r, g, b = rgb_means
        out["red"] = r / (g + 1.0)
        out["blue"] = b / (g + 1.0)
    return out, gray


@dataclass(frozen=True)
class StatRange:
    """One statistic over the enrolment images: mean, sample sd, min and max."""

    mean: float
    sd: float
    min: float
    max: float


@dataclass(frozen=True)
class InputProfile:
    """The enrolment images' statistics: per statistic its mean, sd, min, max."""

    stats: Mapping[str, StatRange]
    n_images: int
    target_side: int = 320
    tolerance_sd: float = 3.0  # k in [min - k*sd, max + k*sd]
    image_shape: tuple[int, ...] = ()
    reference: tuple[float, ...] = ()  # mean layout thumbnail of the enrolment images (unit norm)

    def bounds(self, name: str) -> tuple[float, float]:
        """The accepted range of statistic `name`: [min - k*sd, max + k*sd], sd floored so near-identical enrolment images do not make the range a point."""
        r = self.stats[name]
        sd = max(r.sd, SD_FLOOR.get(name, 0.0))
        return r.min - self.tolerance_sd * sd, r.max + self.tolerance_sd * sd

    def check(self, stats: Mapping[str, float]) -> tuple[str, ...]:
        """Reasons ('brightness_low', 'sharpness_low', ...) for each statistic out of range."""
        reasons = []
        for name, value in stats.items():
            if name not in self.stats:
                continue
            lo, hi = self.bounds(name)
            if not value >= lo:  # NaN counts as out of range
                reasons.append(f"{name}_low")
            elif value > hi:
                reasons.append(f"{name}_high")
        return tuple(reasons)

    def to_json(self) -> str:
        """The profile as the bundle's input_profile.json text (read back by `load_profile`)."""
        doc = {
            "schema": PROFILE_SCHEMA,
            "schema_version": 1,
            "n_images": self.n_images,
            "target_side": self.target_side,
            "tolerance_sd": self.tolerance_sd,
            "image_shape": list(self.image_shape),
            "reference": [round(float(v), 6) for v in self.reference],
            "stats": {k: vars(v) for k, v in self.stats.items()},
        }
        return json.dumps(doc, indent=2) + "\n"


def make_profile(
    stats: Sequence[Mapping[str, float]],
    target_side: int = 320,
    tolerance_sd: float = 3.0,
    image_shape: tuple[int, ...] = (),
    thumbs: Sequence[np.ndarray] = (),
) -> InputProfile:
    """Ranges of `stats` (one dict per good image). With `thumbs`, also the layout reference
    and each image's leave-one-out layout correlation (an image is not its own reference)."""
    if len(stats) < 2:
        raise DataError(f"an input profile needs at least 2 good images, got {len(stats)}")
    reference: tuple[float, ...] = ()
    if len(thumbs):
        t = np.stack(thumbs).astype(np.float64)
        total = t.sum(0)
        loo = [float(t[i] @ _unit(total - t[i])) for i in range(len(t))]
        if min(loo) >= LAYOUT_MIN_AGREEMENT:
            stats = [dict(s, layout=v) for s, v in zip(stats, loo)]
            reference = tuple(float(v) for v in _unit(total))
        else:
            log.info(
                "input profile: layout check off (the good images' layouts disagree: min correlation %.2f < %.2f)",
                min(loo),
                LAYOUT_MIN_AGREEMENT,
            )
    names = [n for n in STATS if all(n in s for s in stats)]
    ranges = {}
    for n in names:
        v = np.array([s[n] for s in stats], np.float64)
        ranges[n] = StatRange(float(v.mean()), float(v.std(ddof=1)), float(v.min()), float(v.max()))
    return InputProfile(ranges, len(stats), target_side, tolerance_sd, tuple(image_shape), reference)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (float(np.linalg.norm(v)) + 1e-12)


def profile_from_images(
    paths: Sequence[str | Path], target_side: int = 320, tolerance_sd: float = 3.0, preprocess: Any = None
) -> InputProfile:
    """The profile of good image files. With the bundle's `preprocess` spec each file is
    measured as the camera image the station sees (edge_runtime.file_input.image_frame: the
    raw Bayer/mono frame at the frame size for raw-frame bundles); without it, as RGB."""
    from edge_runtime.imageio import read_rgb

    stats, thumbs, shape = [], [], ()
    for p in paths:
        if preprocess is not None:
            from edge_runtime.file_input import image_frame

            image, fmt = image_frame(p, preprocess)
        else:
            image, fmt = read_rgb(p), "RGB8"
        shape = shape or image.shape
        st, gray = _measure(image, fmt, target_side)
        stats.append(st)
        thumbs.append(_thumbnail(gray))
    return make_profile(stats, target_side, tolerance_sd, tuple(shape), thumbs)


def load_profile(path: str | Path) -> InputProfile:
    """Read an input_profile.json written by `InputProfile.to_json`.

    Raises:
        BundleError: unreadable, another schema, or missing/mistyped fields.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        if doc.get("schema") != PROFILE_SCHEMA:
            raise BundleError(f"{p}: not an input profile (schema {doc.get('schema')!r})")
        stats = {k: StatRange(**v) for k, v in doc["stats"].items()}
        return InputProfile(
            stats,
            int(doc["n_images"]),
            int(doc["target_side"]),
            float(doc["tolerance_sd"]),
            tuple(doc.get("image_shape", ())),
            tuple(float(v) for v in doc.get("reference", ())),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"{p}: cannot read the input profile ({exc})") from None


def save_profile(root: str | Path, manifest: Any, profile: InputProfile) -> Any:
    """Write input_profile.json into bundle folder `root`; return the manifest recording it."""
    from edge_runtime.bundle import with_file
    from edge_runtime.bundle_stage import replace_file

    replace_file(Path(root) / PROFILE_FILE).write_text(profile.to_json(), encoding="utf-8")
    return with_file(replace(manifest, input_profile=PROFILE_FILE), root, PROFILE_FILE)


@dataclass
class InputCheck:
    """The outcome of one frame: the debounced alarm, this frame's reasons and its statistics."""

    alarm: bool  # the debounced state, what verdicts and the status carry
    reasons: tuple[str, ...]  # this frame's out-of-range statistics
    stats: dict[str, float] = field(default_factory=dict)


class InputMonitor:
    """Per-frame check against a profile, debounced over consecutive frames.

    Args:
        profile: the enrolment images' ranges.
        raise_after: consecutive out-of-range frames that raise the alarm.
        clear_after: consecutive in-range frames that clear it.

    Raises:
        ConfigError: `raise_after` or `clear_after` below 1.
    """

    def __init__(self, profile: InputProfile, raise_after: int = 3, clear_after: int = 3) -> None:
        if raise_after < 1 or clear_after < 1:
            raise ConfigError("input alarm: raise_after and clear_after must be >= 1")
        self.profile, self.raise_after, self.clear_after = profile, raise_after, clear_after
        self.alarm = False
        self.reasons: tuple[str, ...] = ()
        self._bad = self._good = 0
        self.frames_out_of_range = 0
        self._reference = np.asarray(profile.reference, np.float32) if profile.reference else None

    def update(self, image: np.ndarray, pixel_format: str = "RGB8") -> InputCheck:
        """Measure one frame and advance the debounce.

        The alarm rises after `raise_after` consecutive out-of-range frames and clears after
        `clear_after` consecutive good ones, so one odd frame never flips it.

        Args:
            image: the camera image as captured (before preprocessing).
            pixel_format: its format ("RGB8", "BayerRG8", "Mono8", ...).

        Returns:
            The check; `alarm` is the debounced state, `reasons` this frame's alone.
        """
        stats = frame_stats(image, pixel_format, self.profile.target_side, self._reference)
        reasons = self.profile.check(stats)
        if self.profile.image_shape and not _similar_size(image.shape[:2], self.profile.image_shape[:2]):
            reasons += ("image_size",)  # statistics of another size (ROI, binning) are not comparable
        if reasons:
            self.frames_out_of_range += 1
            self._bad, self._good = self._bad + 1, 0
            if self._bad >= self.raise_after:
                if not self.alarm:
                    log.warning("input alarm raised: %s (%s)", ", ".join(reasons), _fmt(stats))
                self.alarm, self.reasons = True, reasons
        else:
            self._good, self._bad = self._good + 1, 0
            if self.alarm and self._good >= self.clear_after:
                log.info("input alarm cleared (%s)", _fmt(stats))
                self.alarm, self.reasons = False, ()
        return InputCheck(self.alarm, reasons, stats)


def _similar_size(a: Sequence[int], b: Sequence[int], tolerance: float = 0.1) -> bool:
    return all(abs(int(x) - int(y)) <= tolerance * int(y) for x, y in zip(a, b))


def _fmt(stats: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in stats.items())


class StationMonitor:
    """What the postprocessor feeds per frame and the status topic reads: the input alarm
    (when the bundle has an input profile) and the rolling mean of OK scores."""

    def __init__(self, profile: InputProfile | None = None, ok_window: int = 500, **debounce: int) -> None:
        if ok_window < 1:
            raise ConfigError("ok_score window must be >= 1")
        self.input = InputMonitor(profile, **debounce) if profile is not None else None
        self._ok: deque[float] = deque(maxlen=ok_window)
        self._last: dict[str, float] = {}
        # observe_* run in the inference thread, status_fields in the pipeline's main loop.
        self._lock = threading.Lock()

    @classmethod
    def for_bundle(cls, bundle: Any, **options: Any) -> StationMonitor:
        """The monitor for `bundle`: with its input profile when it records one, else OK-score tracking only."""
        name = getattr(bundle.manifest, "input_profile", None)
        return cls(load_profile(bundle.path(name)) if name else None, **options)

    def observe_frame(self, image: np.ndarray, pixel_format: str = "RGB8") -> bool:
        """Check one camera image; returns the input_alarm flag for its verdict."""
        if self.input is None:
            return False
        check = self.input.update(image, pixel_format)
        with self._lock:
            self._last = check.stats
        return check.alarm

    def observe_verdict(self, verdict: Mapping[str, Any]) -> None:
        """Add an OK verdict's score to the rolling mean (a drifting mean warns before NG rates do)."""
        if verdict.get("verdict") == "OK" and isinstance(verdict.get("score"), (int, float)):
            with self._lock:
                self._ok.append(float(verdict["score"]))

    @property
    def ok_score_mean(self) -> float | None:
        """Mean score of the last `ok_window` OK verdicts; None before the first."""
        with self._lock:
            ok = list(self._ok)
        return float(np.mean(ok)) if ok else None

    def status_fields(self) -> dict[str, Any]:
        """Fields for Publisher.publish_status: input_alarm, alarms, ok_score_mean (+ window)."""
        alarm = bool(self.input and self.input.alarm)
        with self._lock:
            last, window = dict(self._last), len(self._ok)
        return {
            "input_alarm": alarm,
            "alarms": [f"input_{r}" for r in self.input.reasons] if alarm and self.input else [],
            "ok_score_mean": self.ok_score_mean,
            "ok_score_window": window,
            "input_stats": {k: round(v, 4) for k, v in last.items()},
        }


def bench(
    sizes: Sequence[tuple[int, int]] = ((518, 518), (2160, 4096)), repeats: int = 200, target_side: int = 320
) -> list[str]:
    """Mean cost per frame of frame_stats on random RGB and Bayer frames of `sizes`."""
    rng = np.random.default_rng(0)
    ref = _unit(rng.standard_normal(THUMB * THUMB)).astype(np.float32)  # the layout check runs too
    lines = []
    for h, w in sizes:
        for fmt, img in (
            ("RGB8", rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
            ("BayerRG8", rng.integers(0, 256, (h, w), dtype=np.uint8)),
        ):
            frame_stats(img, fmt, target_side, ref)
            t0 = time.perf_counter()
            for _ in range(repeats):
                frame_stats(img, fmt, target_side, ref)
            ms = 1000 * (time.perf_counter() - t0) / repeats
            lines.append(f"{w}x{h} {fmt:<8} -> {ms:.3f} ms per frame (target side {target_side})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m edge_runtime.input_alarm profile|bench`: store a bundle's input profile, or time the per-frame statistics.

    Returns:
        0, or the error's exit code (2 for bad input) after one line on stderr.
    """
    p = argparse.ArgumentParser(
        prog="python -m edge_runtime.input_alarm", description="input profile for a bundle; cost per frame"
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("profile", help="store the input profile of a folder of good images in a copy of a bundle")
    pr.add_argument("--bundle", required=True)
    pr.add_argument("--images", required=True)
    pr.add_argument("--out", required=True)
    pr.add_argument("--tolerance-sd", type=float, default=3.0)
    pr.add_argument("--force", action="store_true")
    sub.add_parser("bench", help="cost of the per-frame statistics")
    args = p.parse_args(argv)
    if args.cmd == "bench":
        print("\n".join(bench()))
        return 0
    try:
        from edge_runtime.bundle import load_bundle
        from edge_runtime.bundle_stage import write_bundle_copy
        from edge_runtime.imageio import find_images

        bundle = load_bundle(args.bundle)
        profile = profile_from_images(
            find_images(args.images, skip_masks=True),
            tolerance_sd=args.tolerance_sd,
            preprocess=bundle.manifest.preprocess,
        )
        out = write_bundle_copy(bundle, args.out, lambda root, m: save_profile(root, m, profile), overwrite=args.force)
    except ClipInspectError as exc:
        print(f"input_alarm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"input profile of {profile.n_images} images stored in {out.root / PROFILE_FILE}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
