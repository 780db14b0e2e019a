"""An RGB model trained by the real stages on a tiny folder of images (mostly colour, the first
file grey), served by `bentoml serve`: a grey array is told the shape the model takes, and an
encoded image file is read exactly as the training images were, or refused by name."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from tests.conftest import served, shrink, write_params

from mlaas.core.settings import Settings
from mlaas.families.image_files import MAX_ENCODED_IMAGE_BYTES
from mlaas.stages.table import STAGES, run_stage
from mlaas.stores.files import read_table
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow
SIZE = 10
COLOURS = {"blue": (30, 60, 220), "red": (220, 40, 30)}


def _image_folder(root: Path) -> Path:
    """Red and blue squares of the model's size; in sort order a grey one comes first."""
    rng = np.random.default_rng(5)
    for label, colour in COLOURS.items():
        (root / label).mkdir(parents=True)
        for index in range(24):
            pixels = np.clip(rng.normal(colour, 25, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{index:02d}.png")
    grey = np.full((SIZE, SIZE), 128, dtype=np.uint8)
    Image.fromarray(grey).save(root / "blue" / "00.png")  # replaces the first file
    return root


@pytest.fixture(scope="module")
def colour_model(
    project_settings: Settings,
    session_workspace: Workspace,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("image-instances")
    settings = shrink(
        project_settings,
        "colours",
        load={"source": None, "path": str(_image_folder(folder / "squares"))},
        validate={"min_rows": 20},
        split={"test_size": 0.2, "val_size": 0.2},
        train={"max_epochs": 4, "batch_size": 8},
    )
    records = {stage: run_stage(stage, settings, session_workspace) for stage in STAGES}
    with served(write_params(settings, folder), session_workspace, folder / "server.log") as url:
        yield {"url": url, "records": records, "folder": folder}


def _predict(url: str, instances: list[Any]) -> httpx.Response:
    return httpx.post(f"{url}/predict", json={"instances": instances}, timeout=60)


def _png(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_folder_trains_an_rgb_model_though_its_first_file_is_grey(
    colour_model: dict[str, Any],
) -> None:
    dataset = read_table(colour_model["records"]["load"].path, "load")
    assert dataset.schema.metadata[b"mlaas.image_shape"] == b"[10, 10, 3]"
    spec = httpx.get(f"{colour_model['url']}/docs.json", timeout=10).json()
    request = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    instances = request["schema"]["properties"]["instances"]
    array, encoded = instances["items"]["anyOf"]
    assert array["type"] == "array" and array["items"]["items"]["minItems"] == 3
    assert encoded["required"] == ["b64"] and encoded["properties"]["b64"]["type"] == "string"


def test_a_grey_array_sent_to_the_rgb_model_is_told_the_shape(
    colour_model: dict[str, Any],
) -> None:
    refused = _predict(colour_model["url"], [[[128] * SIZE] * SIZE])
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == (
        f"instances.0: each instance must be a {SIZE}x{SIZE} RGB image ({SIZE} rows of {SIZE} "
        '[red, green, blue] of 0-255) or {"b64": "<base64 image file>"}; '
        f"got {SIZE}x{SIZE}"
    )


def test_an_encoded_image_is_answered_like_its_pixels_read_by_the_loader(
    colour_model: dict[str, Any],
) -> None:
    url = colour_model["url"]
    # A large red photo, and a grey one: both resized and converted to the model's 10x10 RGB.
    rng = np.random.default_rng(6)
    red = np.clip(rng.normal(COLOURS["red"], 25, (48, 64, 3)), 0, 255)
    grey = np.full((30, 30), 90)
    as_trained = []
    for pixels in (red, grey):
        image = Image.fromarray(pixels.astype(np.uint8)).convert("RGB")
        resized = image.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        as_trained.append(np.asarray(resized).tolist())
    encoded = _predict(url, [{"b64": _png(red)}, {"b64": _png(grey)}])
    arrays = _predict(url, as_trained)
    assert encoded.status_code == arrays.status_code == 200, encoded.text
    for by_file, by_array in zip(
        encoded.json()["predictions"], arrays.json()["predictions"], strict=True
    ):
        assert by_file["label"] == by_array["label"]
        for label, probability in by_array["probabilities"].items():
            assert by_file["probabilities"][label] == pytest.approx(probability, abs=1e-6)


def test_a_bad_encoded_image_gets_a_400_naming_it(colour_model: dict[str, Any]) -> None:
    url = colour_model["url"]
    good = {"b64": _png(np.zeros((SIZE, SIZE, 3)))}
    bomb = io.BytesIO()
    Image.new("1", (5000, 5000)).save(bomb, format="PNG")  # 25 M pixels in a few kB
    for bad, said in (
        ({"b64": "%%% not base64 %%%"}, "not base64"),
        ({"b64": base64.b64encode(b"GIF89a, but no").decode()}, "not an image"),
        ({"b64": base64.b64encode(b"\0" * (MAX_ENCODED_IMAGE_BYTES + 1)).decode()}, "bytes"),
        ({"b64": base64.b64encode(bomb.getvalue()).decode()}, "5000x5000 pixels"),
    ):
        refused = _predict(url, [good, bad])
        assert refused.status_code == 400, (said, refused.text[:300])
        error = refused.json()["error"]
        assert error.startswith("instances.1.b64: ") and said in error, error
        assert len(refused.content) < 10_000
    assert _predict(url, [good]).status_code == 200  # and it keeps serving
