import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import TypeAdapter, ValidationError

from mlaas.core.errors import SettingsError
from mlaas.core.model_card import ModelCard
from mlaas.core.model_settings import CnnSettings
from mlaas.core.settings import LoadSettings
from mlaas.families.image import ImageFamily, images_to_table, table_images
from mlaas.families.image_files import MAX_ENCODED_IMAGE_BYTES
from mlaas.families.image_models import random_shift

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


def test_a_card_whose_inputs_are_not_an_image_shape_says_so() -> None:
    assert family.instance_type(_card([8, 8, 3])) is not None  # a saved card's JSON still loads
    with pytest.raises(
        ValueError, match=r"has inputs \{'shape': \[8\]\}, which are not ImageInputs"
    ):
        family.instance_type(_card([8]))


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


def _save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def _colour_folder(root: Path, grey: int, rgb: int) -> Path:
    """Two classes; in sort order the grey images come first (`0*.png`), then the RGB ones."""
    rng = np.random.default_rng(1)
    for label in ("a", "b"):
        for index in range(grey):
            _save(root / label / f"0{index}.png", rng.integers(0, 256, (6, 6)))
        for index in range(rgb):
            _save(root / label / f"1{index}.png", rng.integers(0, 256, (6, 6, 3)))
    return root


def _folder(path: Path, **load: Any) -> LoadSettings:
    return LoadSettings(source=None, path=path, **load)


def test_auto_colour_mode_is_what_most_images_are_not_the_first_file(tmp_path: Path) -> None:
    mostly_rgb = family.load(_folder(_colour_folder(tmp_path / "rgb", grey=1, rgb=3)))
    assert table_images(mostly_rgb).shape == (8, 6, 6, 3)
    first = np.asarray(Image.open(tmp_path / "rgb" / "a" / "00.png"), dtype=np.float32)
    assert np.array_equal(table_images(mostly_rgb)[0], np.stack([first] * 3, axis=-1))

    mostly_grey = family.load(_folder(_colour_folder(tmp_path / "grey", grey=3, rgb=1)))
    assert table_images(mostly_grey).shape == (8, 6, 6, 1)


def test_colour_mode_setting_converts_every_image(tmp_path: Path) -> None:
    folder = _colour_folder(tmp_path / "images", grey=1, rgb=3)
    table = family.load(_folder(folder, color_mode="grey"))
    assert table_images(table).shape == (8, 6, 6, 1)
    colour = Image.open(folder / "a" / "10.png")
    assert np.array_equal(table_images(table)[1, :, :, 0], np.asarray(colour.convert("L")))
    assert table_images(family.load(_folder(folder, color_mode="rgb"))).shape[-1] == 3


def test_colour_mode_is_checked_in_the_settings() -> None:
    with pytest.raises(ValidationError, match="color_mode is for an image folder"):
        LoadSettings(source="mnist", color_mode="rgb")
    with pytest.raises(ValidationError, match="'auto', 'grey' or 'rgb'"):
        LoadSettings(source=None, path=Path("."), color_mode="sepia")


def _card(shape: list[int]) -> ModelCard:
    return ModelCard(
        family="image",
        task="classification",
        dataset="images",
        target="label",
        model=CnnSettings(),
        classes=[0, 1],
        inputs={"shape": shape},
    )


def _errors(adapter: TypeAdapter[Any], value: Any) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        adapter.validate_python(value)
    return [(".".join(map(str, e["loc"])), e["msg"]) for e in caught.value.errors()]


def test_an_instance_of_the_wrong_shape_gets_the_shape_the_model_takes() -> None:
    rgb = TypeAdapter(family.instance_type(_card([28, 28, 3])))
    grey_image = [[0] * 28] * 28
    assert _errors(rgb, grey_image) == [
        (
            "",
            "each instance must be a 28x28 RGB image (28 rows of 28 [red, green, blue] of "
            '0-255) or {"b64": "<base64 image file>"}; got 28x28',
        )
    ]
    grey = TypeAdapter(family.instance_type(_card([8, 8])))
    (shape_error,) = _errors(grey, [[[0, 0, 0]] * 8] * 8)
    assert "an 8x8 grey image (8 rows of 8 values 0-255)" in shape_error[1]
    assert shape_error[1].endswith("got 8x8x3")
    assert _errors(grey, [[0] * 8] * 7 + [[0] * 7])[0][1].endswith("rows of different lengths")
    # The right shape with a bad value keeps pydantic's error for that pixel.
    assert _errors(grey, [[0] * 8] * 7 + [[0] * 7 + [300]]) == [
        ("7.7", "Input should be less than or equal to 255")
    ]


def _encoded(pixels: np.ndarray, format: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format=format)
    return base64.b64encode(buffer.getvalue()).decode()


def test_an_encoded_image_is_read_exactly_like_a_training_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    photo = rng.integers(0, 256, (20, 30, 3))  # colour, and not the model's size
    _save(tmp_path / "images" / "a" / "photo.png", photo)
    _save(tmp_path / "images" / "b" / "other.png", rng.integers(0, 256, (8, 8)))
    for mode, shape in (("grey", [8, 8]), ("rgb", [8, 8, 3])):
        load = _folder(tmp_path / "images", image_size=[8, 8], color_mode=mode)
        trained_on = table_images(family.load(load))[0].reshape(shape)
        served = TypeAdapter(family.instance_type(_card(shape))).validate_python(
            {"b64": _encoded(photo)}
        )
        assert np.array_equal(served, trained_on)
        features = family.instances_to_features([served, trained_on.tolist()], _card(shape))
        assert features.shape == (2, *shape) and np.array_equal(features[0], features[1])


def _b64_error(value: Any) -> tuple[str, str]:
    adapter = TypeAdapter(list[family.instance_type(_card([8, 8]))])  # type: ignore[misc]
    (error,) = _errors(adapter, [[[0] * 8] * 8, value])
    return error


def test_a_bad_encoded_image_is_named_and_explained() -> None:
    blank = np.zeros((8, 8))
    noise = base64.b64decode(_encoded(np.random.default_rng(3).integers(0, 256, (64, 64))))
    truncated = base64.b64encode(noise[: len(noise) // 2]).decode()
    oversized = base64.b64encode(b"\x00" * (MAX_ENCODED_IMAGE_BYTES + 1)).decode()
    bomb = io.BytesIO()
    Image.new("1", (5000, 5000)).save(bomb, format="PNG")  # 25 M pixels in a few kB
    for value, message in (
        ({"b64": "not base64!"}, "not base64"),
        ({"b64": "data:image/png;base64," + _encoded(blank)}, "without the `data:"),
        ({"b64": base64.b64encode(b"hello, world").decode()}, "not an image"),
        ({"b64": truncated}, "truncated"),
        ({"b64": oversized}, f"more than the {MAX_ENCODED_IMAGE_BYTES} allowed"),
        ({"b64": base64.b64encode(bomb.getvalue()).decode()}, "5000x5000 pixels"),
        ({"b64": 7}, "valid string"),
    ):
        where, said = _b64_error(value)
        assert where == "1.b64" and message in said, (where, said)
    assert _b64_error({"b64": "", "mode": "L"}) == ("1.mode", "Extra inputs are not permitted")
    # Line breaks, as `base64 FILE` writes them, are fine; so is a JPEG.
    wrapped = "\n".join(_encoded(blank)[i : i + 76] for i in range(0, len(_encoded(blank)), 76))
    adapter = TypeAdapter(family.instance_type(_card([8, 8])))
    assert adapter.validate_python({"b64": wrapped}).shape == (8, 8)
    assert adapter.validate_python({"b64": _encoded(blank, "JPEG")}).shape == (8, 8)


def test_the_instance_schema_offers_pixel_arrays_or_an_encoded_image() -> None:
    schema = TypeAdapter(family.instance_type(_card([8, 8]))).json_schema()
    array, encoded = schema["anyOf"]
    assert array["type"] == "array" and array["minItems"] == array["maxItems"] == 8
    assert encoded["type"] == "object" and encoded["required"] == ["b64"]
    assert encoded["properties"]["b64"]["contentEncoding"] == "base64"
    assert encoded["additionalProperties"] is False


@pytest.mark.parametrize("shape", [(1, 28, 28), (5, 8, 8), (3, 30, 17), (2, 4, 4)])
def test_the_thumbnail_is_each_blocks_mean(shape: tuple[int, ...]) -> None:
    from mlaas.families.descriptions import describe_images

    images = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
    thumbnail = describe_images(images, 255.0).embeddings
    assert thumbnail is not None
    grey = images.astype(np.float64) / 255.0
    rows = np.array_split(np.arange(shape[1]), 4)
    cols = np.array_split(np.arange(shape[2]), 4)
    for index, (r, c) in enumerate((r, c) for r in rows for c in cols):
        block = grey[:, r[0] : r[-1] + 1, c[0] : c[-1] + 1].mean(axis=(1, 2))
        np.testing.assert_allclose(thumbnail[:, index], block, rtol=1e-12)
