"""User-supplied paths and names: checked, and unable to make the pipeline read outside the
places the user named or write outside $MLAAS_HOME."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlaas.core.errors import DataError, SettingsError
from mlaas.core.settings import PIPELINE_NAME_PATTERN, LoadSettings, parse_settings
from mlaas.families import check_settings
from mlaas.families.image import ImageFamily
from mlaas.stages.table import run_stage
from mlaas.stores.workspace import Workspace

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"  # load.name's


def _image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 3):
    rng = np.random.default_rng(0)
    for label in classes:
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{index}.png")
    return root


def _image_settings(folder: Path) -> LoadSettings:
    return LoadSettings(source=None, path=folder)


def test_a_missing_load_path_is_named_before_and_during_a_run(
    tmp_path: Path, workspace: Workspace
) -> None:
    settings = parse_settings(
        {
            "pipeline": {"name": "paths", "family": "tabular"},
            "load": {"source": None, "path": str(tmp_path / "nowhere.csv"), "target": "y"},
            "train": {"model": {"name": "ridge"}},
        }
    )
    with pytest.raises(SettingsError, match=r"load\.path: .*nowhere\.csv does not exist"):
        check_settings(settings)
    with pytest.raises(SettingsError, match=r"load\.path: .*nowhere\.csv does not exist"):
        run_stage("load", settings, workspace)
    assert not workspace.pipeline("paths").dataset.exists()


def test_load_path_is_expanded_and_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    load = LoadSettings(source=None, path=Path("~/./sub/../data.csv"))
    assert load.data_path == tmp_path.resolve() / "data.csv"


def test_an_image_folder_with_links_inside_it_loads(tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "images")
    (folder / "cat" / "again.png").symlink_to(folder / "dog" / "0.png")
    table = ImageFamily().load(_image_settings(folder))
    assert table.num_rows == 7


@pytest.mark.parametrize("link", ["file", "class-folder"])
def test_an_image_folder_cannot_read_outside_itself_through_a_link(
    tmp_path: Path, link: str
) -> None:
    folder = _image_folder(tmp_path / "images")
    outside = _image_folder(tmp_path / "elsewhere", classes=("secret",))
    if link == "file":
        entry = folder / "cat" / "leak.png"
        entry.symlink_to(outside / "secret" / "0.png")
    else:
        entry = folder / "secret"
        entry.symlink_to(outside / "secret", target_is_directory=True)
    with pytest.raises(DataError, match="outside the data folder") as refused:
        ImageFamily().load(_image_settings(folder))
    assert str(entry) in str(refused.value) and "copy the file in" in str(refused.value)


@pytest.mark.parametrize(
    "stem", ["../../etc/passwd", "my data (final)", "x'; DROP TABLE runs; --", "...", "é"]
)
def test_a_data_set_name_from_a_file_name_stays_a_plain_name(stem: str) -> None:
    name = LoadSettings(source=None, path=Path(f"/data/{stem}.csv")).dataset_name
    assert re.fullmatch(NAME_PATTERN, name), name


def test_the_data_set_name_keeps_a_plain_file_name_and_an_explicit_name() -> None:
    assert LoadSettings(source=None, path=Path("shop-2024.v2.csv")).dataset_name == "shop-2024.v2"
    assert LoadSettings(source=None, path=Path("a b.csv"), name="shop").dataset_name == "shop"


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("pipeline", "name", "../outside"),
        ("pipeline", "name", "/abs"),
        ("pipeline", "name", "Upper"),
        ("load", "name", "../outside"),
        ("load", "name", "a/b"),
    ],
)
def test_names_that_build_paths_are_refused(section: str, key: str, value: str) -> None:
    raw: dict = {"load": {"source": None, "path": "x.csv"}} if section == "load" else {}
    raw.setdefault(section, {})[key] = value
    with pytest.raises(SettingsError, match=rf"{section}\.{key}"):
        parse_settings(raw)


@pytest.mark.parametrize("name", ["../outside", "a/b", "", ".hidden"])
def test_the_workspace_builds_no_pipeline_folder_outside_itself(
    name: str, workspace: Workspace
) -> None:
    assert not re.match(PIPELINE_NAME_PATTERN, name)
    with pytest.raises(SettingsError, match="pipeline name"):
        workspace.pipeline(name)
    assert workspace.pipeline("ok-name").root.parent == workspace.home / "pipelines"
