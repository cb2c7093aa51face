"""Thresholds from good parts only: a distribution-free bound on the false-reject rate.

A station usually has good parts and no defects, so the threshold is set from the scores of
n good images alone. The rule (verdict NG when score >= threshold, as on the device):

    threshold = the (m+1)-th largest good score, nudged up to the next float, (+ margin)

For any continuous score distribution of good parts, the number of the n enrollment scores
at or above the true (1 - frr) quantile is Binomial(n, frr). The threshold rejects at most
`frr` of future good parts exactly when at least m+1 enrollment scores reach that quantile, so

    P(true FRR <= frr) = P(Binomial(n, frr) >= m + 1)

(order statistics; no assumption on the shape of the distribution). `choose_exceedances`
takes the largest m (lowest threshold, best defect sensitivity) whose probability still
reaches the requested confidence. With m = 0 (the maximum) this needs
n >= ln(1 - confidence) / ln(1 - frr) images: 598 for frr 0.5 % at 95 %. `images_needed`
gives that number and `certified_frr` the best bound n images can give. A margin added on
top only lowers the false-reject rate, so the bound still holds.

Pure functions; numpy only for sorting, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from edge_runtime.errors import ConfigError, DataError

METHOD = "order-statistic"


def binom_sf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) >= k), summed in log space (stable for n in the hundred thousands)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    lgn = math.lgamma(n + 1)
    # Sum the shorter tail for accuracy and speed.
    if k > n * p:
        terms = [lgn - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k, n + 1)]
        return min(1.0, _logsumexp(terms))
    terms = [lgn - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(0, k)]
    return max(0.0, 1.0 - _logsumexp(terms))


def _logsumexp(terms: list[float]) -> float:
    top = max(terms)
    return math.exp(top) * math.fsum(math.exp(t - top) for t in terms)


def check_target(frr: float, confidence: float) -> None:
    """Refuse a target before any image is scored.

    Raises:
        ConfigError: `frr` outside (0, 1) or `confidence` outside [0.5, 1).
    """
    if not (isinstance(frr, (int, float)) and 0.0 < frr < 1.0):
        raise ConfigError(f"target FRR must be in (0, 1), e.g. 0.005 for 0.5 %, got {frr}")
    if not (isinstance(confidence, (int, float)) and 0.5 <= confidence < 1.0):
        raise ConfigError(f"confidence must be in [0.5, 1), e.g. 0.95, got {confidence}")


def coverage(n: int, exceedances: int, frr: float) -> float:
    """Probability that the threshold at the (exceedances+1)-th largest of n good scores has a
    true FRR <= frr."""
    return binom_sf(exceedances + 1, n, frr)


@lru_cache(maxsize=256)  # a function of (n, frr, confidence) only; re-enrolling asks the same again
def choose_exceedances(n: int, frr: float, confidence: float) -> int | None:
    """The largest m (enrollment scores allowed above the threshold) whose coverage reaches
    `confidence`; None when even the maximum score (m = 0) cannot."""
    check_target(frr, confidence)
    if n < 1 or coverage(n, 0, frr) < confidence:
        return None
    lo, hi = 0, n - 1  # coverage falls as m grows: binary search the last m that passes
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if coverage(n, mid, frr) >= confidence:
            lo = mid
        else:
            hi = mid - 1
    return lo


def images_needed(frr: float, confidence: float = 0.95, exceedances: int = 0) -> int:
    """The fewest good images that certify `frr` at `confidence` with the threshold at the
    (exceedances+1)-th largest score."""
    check_target(frr, confidence)
    if exceedances == 0:
        return math.ceil(math.log1p(-confidence) / math.log1p(-frr) - 1e-12)
    lo, hi = exceedances + 1, exceedances + 1
    while coverage(hi, exceedances, frr) < confidence:
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if coverage(mid, exceedances, frr) >= confidence:
            hi = mid
        else:
            lo = mid + 1
    return lo


@lru_cache(maxsize=256)
def certified_frr(n: int, exceedances: int, confidence: float) -> float:
    """The smallest FRR bound that n images certify at `confidence` with `exceedances`
    scores above the threshold (bisection; coverage rises with frr)."""
    if n < 1 or exceedances >= n:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if coverage(n, exceedances, mid) >= confidence:
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True)
class FrrThreshold:
    """A threshold chosen from good-part scores and the false-reject guarantee it carries.

    `frr_bound` is what it certifies at `confidence`; it exceeds `target_frr` only when
    `best_effort` took the maximum score from too few images.
    """

    value: float
    target_frr: float
    confidence: float
    n_images: int
    exceedances: int  # enrollment scores at or above the threshold before the margin
    frr_bound: float  # FRR this threshold certifies at `confidence` (<= target unless best effort)
    expected_frr: float  # (m + 1) / (n + 1): the mean FRR of this rule over enrollments
    margin: float
    best_effort: bool

    def describe(self) -> str:
        """The one-line method text recorded in the manifest's threshold and in enrollment.json."""
        how = (
            f"{METHOD}: the {_ordinal(self.exceedances + 1)} largest of {self.n_images} good-part scores"
            f"{f' + margin {self.margin:g}' if self.margin else ''}; "
            f"P(FRR <= {self.frr_bound:.4g}) >= {self.confidence:g} (distribution-free binomial bound), "
            f"expected FRR {self.expected_frr:.4g}"
        )
        if self.best_effort:
            how += f"; BEST EFFORT: too few images for the target FRR {self.target_frr:g}"
        return how


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def frr_threshold(
    scores: Sequence[float] | np.ndarray,
    target_frr: float,
    confidence: float = 0.95,
    *,
    margin: float = 0.0,
    best_effort: bool = False,
) -> FrrThreshold:
    """The threshold for `target_frr` from good-part `scores` (see the module docstring).

    Too few images for the target raise ConfigError naming how many are needed, unless
    `best_effort`, which takes the maximum score and reports the weaker bound it certifies.

    Args:
        scores: image scores of good parts, through the station's own backend.
        target_frr: the false-reject rate to certify, in (0, 1).
        confidence: the probability that the true FRR is at most the bound.
        margin: added on top (>= 0); only lowers the FRR, so the bound still holds.
        best_effort: accept too few images (see above) instead of refusing.

    Returns:
        The threshold with its bound, expected FRR and the rank it was taken at.

    Raises:
        ConfigError: a bad target or margin, or too few images without `best_effort`.
        DataError: no scores, or a NaN/infinite score.
    """
    check_target(target_frr, confidence)
    s = _checked_scores(scores)
    if not (math.isfinite(margin) and margin >= 0):
        raise ConfigError(f"margin must be >= 0, got {margin}")
    n = int(s.size)
    m = choose_exceedances(n, target_frr, confidence)
    weak = m is None
    if m is None:
        _refuse_unless_best_effort(n, target_frr, confidence, best_effort)
        m = 0
    ranked = np.sort(s)[::-1]
    # nextafter: the enrollment image at the threshold passes (score >= threshold is NG); for
    # continuous scores this moves the FRR by zero, so the bound is unchanged.
    value = float(np.nextafter(ranked[m], np.inf)) + float(margin)
    return FrrThreshold(
        value=value,
        target_frr=float(target_frr),
        confidence=float(confidence),
        n_images=n,
        exceedances=int(m),
        frr_bound=certified_frr(n, m, confidence),
        expected_frr=(m + 1) / (n + 1),
        margin=float(margin),
        best_effort=weak,
    )


def _checked_scores(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """`scores` as a flat float64 array; DataError when there are none or one is NaN/infinite."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise DataError("no good-part scores to set a threshold from")
    if not np.isfinite(s).all():
        raise DataError(
            f"{int((~np.isfinite(s)).sum())} good-part scores are NaN or infinite; the model output is broken"
        )
    return s


def _refuse_unless_best_effort(n: int, target_frr: float, confidence: float, best_effort: bool) -> None:
    """ConfigError naming the images needed when `n` cannot certify the target, unless `best_effort`."""
    if best_effort:
        return
    need = images_needed(target_frr, confidence)
    raise ConfigError(
        f"target FRR {target_frr:g} at {confidence:g} confidence needs at least {need} good images, got {n} "
        f"({n} images certify at best FRR {certified_frr(n, 0, confidence):.3g}); add images, raise "
        "--target-frr, or pass --best-effort"
    )


def images_needed_table(
    frrs: Sequence[float] = (0.1, 0.05, 0.02, 0.01, 0.005, 0.001), confidences: Sequence[float] = (0.9, 0.95, 0.99)
) -> str:
    """Markdown table: good images needed (threshold at the maximum score) per FRR and confidence."""
    head = "| target FRR | " + " | ".join(f"{c:.0%} confidence" for c in confidences) + " |"
    rule = "| ---: | " + " | ".join("---:" for _ in confidences) + " |"
    rows = [f"| {f:.1%} | " + " | ".join(str(images_needed(f, c)) for c in confidences) + " |" for f in frrs]
    return "\n".join([head, rule, *rows])
