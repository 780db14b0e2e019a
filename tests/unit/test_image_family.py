import numpy as np
import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from mlaas.errors import SettingsError
from mlaas.families.image import (
    ImageFamily,
    images_to_table,
    random_shift,
    table_images,
)
from mlaas.settings import CnnSettings, LoadSettings

family = ImageFamily()


def _images(count: int = 6, size: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(count, size, size, 1)).astype(np.float32)


def test_table_round_trip_keeps_pixels_shape_and_labels() -> None:
    images = _images()
    table = images_to_table(images, np.arange(6) % 3)
    assert np.array_equal(table_images(table), images)
    assert table.column("label").to_pylist() == [0, 1, 2, 0, 1, 2]


def test_validation_frame_exposes_bad_pixels_and_missing_images() -> None:
    images = _images()
    images[1, 0, 0, 0] = 300.0
    images[2, 1, 1, 0] = np.nan
    images[3] = np.nan
    frame = family.validation_frame(
        images_to_table(images, [0, 1, 1, 0, 1, 0]), LoadSettings(source="digits")
    )
    assert frame.loc[1, "pixel_max"] == 300.0
    assert frame.loc[2, "nonfinite_pixels"] == 1
    assert np.isnan(frame.loc[3, "pixel_min"])
    assert frame.loc[0, "label_share"] == pytest.approx(0.5)
    assert (frame["height"] == 8).all() and (frame["channels"] == 1).all()


def test_unknown_source_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match=r"load\.source.*choose one of"):
        family.load(LoadSettings(source="cifar"))


def test_network_takes_raw_2d_instances_and_returns_one_logit_per_class() -> None:
    table = images_to_table(_images(), np.arange(6) % 3)
    card = family.model_card(table, LoadSettings(source="digits"), CnnSettings(conv_channels=[4]))
    assert card.inputs["shape"] == [8, 8]
    network = family.recipe(card).network(None).eval()  # no dropout: same input, same output
    logits = network(torch.full((5, 8, 8), 255.0))
    assert logits.shape == (5, 10)
    uint8_logits = network(torch.full((5, 8, 8), 255, dtype=torch.uint8))
    assert torch.allclose(logits, uint8_logits)


def test_too_many_convolutions_for_the_image_size_is_explained() -> None:
    table = images_to_table(_images(), np.arange(6) % 3)
    card = family.model_card(
        table, LoadSettings(source="digits"), CnnSettings(conv_channels=[4, 4, 4, 4])
    )
    with pytest.raises(SettingsError, match="leave nothing of a 8x8 image"):
        family.recipe(card).network(None)


def test_instance_schema_refuses_what_is_not_an_image_of_the_right_shape() -> None:
    table = images_to_table(_images(size=2), [0, 1, 0, 1, 0, 1])
    card = family.model_card(
        table, LoadSettings(source="digits"), CnnSettings(conv_channels=[1], kernel_size=1)
    )
    adapter = TypeAdapter(family.instance_type(card))
    assert adapter.validate_python([[0, 1.5], [255, 3]]) == [[0, 1.5], [255, 3]]
    for bad in (
        [[0, 1], [2]],  # ragged
        [[0, 1], [2, 3], [4, 5]],  # wrong height
        [[0, "1"], [2, 3]],  # string where a number goes
        [[0, 256], [2, 3]],  # out of range
        [[0, -1], [2, 3]],
        [[0, float("nan")], [2, 3]],
        [[0, float("inf")], [2, 3]],
        "image",
    ):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)


def test_random_shift_moves_the_image_within_bounds() -> None:
    torch.manual_seed(0)
    batch = torch.zeros(32, 8, 8, 1, dtype=torch.uint8)
    batch[:, 4, 4, 0] = 255
    shifted = random_shift(batch, max_shift=2)
    assert shifted.shape == batch.shape and shifted.dtype == torch.uint8
    rows, cols = (
        torch.nonzero(shifted[..., 0] == 255)[:, 1],
        torch.nonzero(shifted[..., 0] == 255)[:, 2],
    )
    assert len(rows) == 32  # the bright pixel survives every shift of at most 2
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 1
    grey = random_shift(batch[..., 0], max_shift=2)  # (n, h, w): grey images without channels
    assert grey.shape == (32, 8, 8) and (grey == 255).sum() == 32
