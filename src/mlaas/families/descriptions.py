"""How each family describes its instances to the monitor, and what it learns to do so.

Each pair is `learn(training features) -> learned` and `describe(features, learned) ->
InputSummary` (see `mlaas.core.reference`). They run on the training rows when a model is
trained and on every answered instance, so they are vectorised over the batch and cheap: a
description is a handful of numbers per instance, never the model's own work.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlaas.core.reference import CATEGORY, NUMBER, ColumnKind, InputSummary, Value

MAX_CATEGORY_SET = 1000
"""A category column with more values than this is an identifier, not a set to check against
(its values are still described, and drift is still measured on them)."""
SHOWN_VALUES = 5
EMBEDDING_DIMENSIONS = 16


def _no_warnings(count: int) -> list[list[str]]:
    return [[] for _ in range(count)]


# --- tables: the features themselves, checked against the training ranges and sets ----------


def learn_table(frame: pd.DataFrame, kinds: dict[str, str]) -> dict[str, Any]:
    """Each numeric feature's training range and each category's set of values."""
    learned: dict[str, Any] = {}
    for name, kind in kinds.items():
        values = frame[name].dropna()
        if kind == NUMBER:
            numbers = values.astype(float)
            learned[name] = (
                {"min": float(numbers.min()), "max": float(numbers.max())} if len(numbers) else {}
            )
        else:
            seen = sorted(map(str, values.unique()))
            learned[name] = {"values": seen} if len(seen) <= MAX_CATEGORY_SET else {}
    return {"features": learned}


def number_block(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """The columns `names` of `frame` as one float64 array (NaN where missing), a copy."""
    if list(frame.columns) == names:
        # A frame of numbers only is one block in pandas: a few microseconds, where selecting
        # columns by name costs about ten a column.
        return frame.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    return frame[names].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)


def describe_table(
    frame: pd.DataFrame, kinds: dict[str, str], learned: dict[str, Any]
) -> InputSummary:
    """The features as they are, and a warning for each value outside what training saw."""
    rows = len(frame)
    warnings = _no_warnings(rows)
    columns: dict[str, Sequence[Value]] = {}
    column_kinds: dict[str, ColumnKind] = {}
    numeric = [name for name, kind in kinds.items() if kind == NUMBER]
    # Every number column as one float block, read once: pandas costs tens of microseconds per
    # column touched, which was most of a one-row request's description (1.9 ms for 30 columns).
    block = number_block(frame, numeric) if numeric else None
    position = {name: index for index, name in enumerate(numeric)}
    for name, kind in kinds.items():
        rule = learned.get("features", {}).get(name, {})
        if kind == NUMBER and block is not None:
            numbers = block[:, position[name]]
            missing = np.isnan(numbers)
            values = numbers.tolist()
            columns[name] = [None if gone else v for v, gone in zip(values, missing, strict=True)]
            column_kinds[name] = NUMBER
            if "min" in rule:
                outside = ~missing & ((numbers < rule["min"]) | (numbers > rule["max"]))
                for row in np.flatnonzero(outside):
                    warnings[row].append(
                        f"{name}: {numbers[row]:g} is outside the training range "
                        f"[{rule['min']:g}, {rule['max']:g}]"
                    )
        else:
            series = frame[name]
            missing = series.isna().to_numpy()
            texts = [
                None if gone else str(v) for v, gone in zip(series.tolist(), missing, strict=True)
            ]
            columns[name] = list(texts)
            column_kinds[name] = CATEGORY
            if "values" in rule:
                known = set(rule["values"])
                for index, value in enumerate(texts):
                    if value is not None and value not in known:
                        warnings[index].append(
                            f"{name}: {value!r} was never seen in training "
                            f"(it saw {_shown(rule['values'])})"
                        )
    return InputSummary(columns, column_kinds, warnings)


def _shown(values: list[str]) -> str:
    head = ", ".join(repr(value) for value in values[:SHOWN_VALUES])
    more = len(values) - SHOWN_VALUES
    return head + (f" and {more} more" if more > 0 else "")


# --- texts: lengths, words the model never saw, and a hashed bag of words --------------------

WORD = re.compile(r"\w+", re.UNICODE)
VOCABULARY_SIZE = 20_000


def _words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def learn_texts(texts: list[str]) -> dict[str, Any]:
    """The training texts' words (those seen at least twice, the most frequent first)."""
    counts = Counter(word for text in texts for word in _words(text))
    common = [word for word, count in counts.most_common(VOCABULARY_SIZE) if count >= 2]
    return {"vocabulary": sorted(common)}


def describe_texts(texts: list[str], learned: dict[str, Any]) -> InputSummary:
    """Characters, words, the share of words training never saw, and a hashed bag of words.

    The embedding is a signed hash of each word into 16 dimensions, normalised: the same for
    every text model (it needs no model internals), and two windows of texts on other subjects
    have other means, which is what embedding drift measures.
    """
    vocabulary = set(learned.get("vocabulary", []))
    chars, counts, unknown = [], [], []
    embeddings = np.zeros((len(texts), EMBEDDING_DIMENSIONS))
    for row, text in enumerate(texts):
        words = _words(text)
        chars.append(float(len(text)))
        counts.append(float(len(words)))
        unknown.append(sum(word not in vocabulary for word in words) / len(words) if words else 0.0)
        for word in words:
            digest = zlib.crc32(word.encode())
            embeddings[row, digest % EMBEDDING_DIMENSIONS] += 1.0 if digest & 1 << 31 else -1.0
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    embeddings = np.divide(embeddings, norms, out=np.zeros_like(embeddings), where=norms > 0)
    return InputSummary(
        columns={"text_chars": chars, "text_words": counts, "unknown_word_share": unknown},
        kinds={"text_chars": NUMBER, "text_words": NUMBER, "unknown_word_share": NUMBER},
        warnings=_no_warnings(len(texts)),
        embeddings=embeddings,
    )


# --- images: intensities and a 4x4 thumbnail ------------------------------------------------


def describe_images(images: np.ndarray, pixel_max: float) -> InputSummary:
    """Mean, spread, darkest and brightest intensity (as shares of the pixel maximum), the
    share of dark pixels, and a 4x4 grey thumbnail as the embedding."""
    count = len(images)
    flat = images.reshape(count, -1).astype(np.float64) / pixel_max
    grey = images.astype(np.float64) / pixel_max
    if grey.ndim == 4:  # height, width, channels
        grey = grey.mean(axis=3)
    thumbnail = _thumbnail(grey)
    columns: dict[str, Sequence[Value]] = {
        "intensity_mean": flat.mean(axis=1).tolist(),
        "intensity_std": flat.std(axis=1).tolist(),
        "intensity_min": flat.min(axis=1).tolist(),
        "intensity_max": flat.max(axis=1).tolist(),
        "dark_share": (flat < 0.1).mean(axis=1).tolist(),
    }
    return InputSummary(
        columns=columns,
        kinds=dict.fromkeys(columns, NUMBER),
        warnings=_no_warnings(count),
        embeddings=thumbnail,
    )


THUMBNAIL_SIDE = 4


def _thumbnail(grey: np.ndarray) -> np.ndarray:
    """Each image's mean over a 4x4 grid of near-equal blocks, row by row: (count, 16)."""
    height, width = grey.shape[1:3]
    rows = np.array_split(np.arange(height), THUMBNAIL_SIDE)
    cols = np.array_split(np.arange(width), THUMBNAIL_SIDE)
    if min(height, width) < THUMBNAIL_SIDE:  # empty blocks: their mean is NaN, as it was
        return np.stack([grey[:, r][:, :, c].mean(axis=(1, 2)) for r in rows for c in cols], axis=1)
    # Block sums in two passes (rows, then columns): 16 slices and means cost a served image
    # a quarter of a millisecond, these two about a tenth of it.
    sums = np.add.reduceat(grey, [r[0] for r in rows], axis=1)
    sums = np.add.reduceat(sums, [c[0] for c in cols], axis=2)
    sizes = np.outer([len(r) for r in rows], [len(c) for c in cols])
    return (sums / sizes).reshape(len(grey), THUMBNAIL_SIDE * THUMBNAIL_SIDE)


# --- ratings: how well known the user and the item are ---------------------------------------


def learn_ratings(frame: pd.DataFrame, user: str, item: str) -> dict[str, Any]:
    """How many training ratings each user and each item has."""
    return {
        "user_ratings": frame[user].astype(str).value_counts().to_dict(),
        "item_ratings": frame[item].astype(str).value_counts().to_dict(),
    }


def describe_ratings(
    frame: pd.DataFrame, user: str, item: str, learned: dict[str, Any]
) -> InputSummary:
    """The training ratings of each request's user and item (0: unknown to training). A shift
    towards new users or niche items shows here before it shows in the errors."""
    users, items = learned.get("user_ratings", {}), learned.get("item_ratings", {})
    columns: dict[str, Sequence[Value]] = {
        "user_ratings": [float(users.get(str(u), 0)) for u in frame[user]],
        "item_ratings": [float(items.get(str(i), 0)) for i in frame[item]],
    }
    return InputSummary(
        columns,
        {"user_ratings": NUMBER, "item_ratings": NUMBER},
        _no_warnings(len(frame)),
    )
