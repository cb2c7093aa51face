"""Honest splits: every image of a data set gets exactly one role, train, val or test.

Rules (`plan_splits`), applied per category, the same in `train` and in `eval`:

1. A held-out category (``data.holdout``, or any category outside ``data.categories`` when
   that is set): its test images are test (the zero-shot protocol); its train/val images
   are not used.
2. The data set's own validation split (``val/`` folder, CSV ``val``, meta.json ``val``): val.
3. The data set's own test split: test, unless ``data.splits`` trains on it (AnomalyCLIP
   trains on the test folders, which hold the defects); then a seeded ``data.test_fraction``
   of them (per label) stays test and the rest joins the training pool. CSV rows without a
   split (only with ``data.unsplit: seeded``) are treated the same way.
4. The data set's own train split: training pool (unused if ``data.splits`` leaves it out).
5. A category without its own val images: a seeded ``data.val_fraction`` of its training
   pool (per label, so validation sees defects when training does) becomes val.

The draw depends only on the seed, the category, the label and the images' split/defect/file
name, not on the folder the data was read from, so eval reproduces the training run's plan.
Validation chooses the best epoch and the threshold; test is only reported.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from train.config import DataConfig
from train.data import Sample

ROLES = ("train", "val", "test")


@dataclass(frozen=True)
class SplitPlan:
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    test: tuple[Sample, ...]

    def role(self, name: str) -> list[Sample]:
        if name not in ROLES:
            raise ValueError(f"unknown role {name!r}")
        return list(getattr(self, name))

    def summary(self) -> str:
        return ", ".join(
            f"{r} {len(getattr(self, r))} ({sum(s.label for s in getattr(self, r))} anomalous)" for r in ROLES
        )


def _key(s: Sample) -> tuple[str, str, str]:
    return (s.split, s.defect, s.image_path.name)


def _draw(samples: Sequence[Sample], fraction: float, seed: int, purpose: str) -> tuple[list[Sample], list[Sample]]:
    """(drawn, rest): a seeded `fraction` of each (category, label) group. A group of two or
    more gives at least one image to each side when 0 < fraction."""
    drawn: list[Sample] = []
    rest: list[Sample] = []
    groups: dict[tuple[str, int], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.category, s.label), []).append(s)
    for (category, label), group in sorted(groups.items()):
        group = sorted(group, key=_key)
        random.Random(f"{seed}:{purpose}:{category}:{label}").shuffle(group)
        k = round(fraction * len(group))
        if fraction > 0 and len(group) >= 2:
            k = min(max(k, 1), len(group) - 1)
        drawn.extend(group[:k])
        rest.extend(group[k:])
    return drawn, rest


def plan_splits(samples: Iterable[Sample], data: DataConfig, seed: int) -> SplitPlan:
    """Assign every sample one role (see the module docstring)."""
    samples = list(samples)
    held = set(data.holdout)
    if data.categories:  # a category training never selected is as unseen as a held-out one
        held |= {s.category for s in samples} - set(data.categories)
    trains_on_test = "test" in data.splits
    trains_on_train = "train" in data.splits
    train: list[Sample] = []
    val: list[Sample] = []
    test: list[Sample] = []
    carve: list[Sample] = []  # own test (when trained on) and unsplit rows
    pool: list[Sample] = []
    for s in samples:
        if s.category in held:
            if s.split in ("test", ""):  # its train/val images are neither trained on nor reported
                test.append(s)
        elif s.split == "test" and not trains_on_test:
            test.append(s)
        elif s.split == "val":
            val.append(s)
        elif s.split == "train":
            if trains_on_train:  # otherwise unused: the data set's own test split is the report
                pool.append(s)
        else:  # own test split trained on, or a row without a split
            carve.append(s)
    kept_for_test, carved_pool = _draw(carve, data.test_fraction, seed, "test")
    test.extend(kept_for_test)
    pool.extend(carved_pool)
    own_val = {s.category for s in val}
    drawn, rest = _draw([s for s in pool if s.category not in own_val], data.val_fraction, seed, "val")
    val.extend(drawn)
    train.extend(rest)
    train.extend(s for s in pool if s.category in own_val)
    order = lambda items: tuple(sorted(items, key=lambda s: (s.category, *_key(s))))  # noqa: E731
    return SplitPlan(order(train), order(val), order(test))
