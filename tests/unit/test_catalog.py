"""The platform's catalog of pipelines: what `up` deploys and what the API created."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlaas.core.errors import Conflict, NotFound, SettingsError
from mlaas.stores.catalog import Catalog
from mlaas.stores.workspace import Workspace


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(Workspace(tmp_path / "home"))


def test_up_entries_follow_the_files_given_and_api_ones_stay(
    catalog: Catalog, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    catalog.sync_files({"a": first, "b": second})
    created = catalog.create("made", {"pipeline": {"name": "made"}}, {"pipeline": {"name": "made"}})
    assert catalog.names() == ["a", "b", "made"]
    assert Path(created.params).read_text().startswith("pipeline:")
    assert catalog.request("made") == {"pipeline": {"name": "made"}}
    catalog.sync_files({"a": second})  # `up` again with other files: b is no longer deployed
    assert catalog.names() == ["a", "made"]
    assert catalog.get("a").params == str(second.resolve())


def test_a_taken_name_is_a_conflict(catalog: Catalog, tmp_path: Path) -> None:
    catalog.create("made", {}, {})
    with pytest.raises(Conflict, match=r"pipeline\.name"):
        catalog.create("made", {}, {})
    with pytest.raises(Conflict, match="created over the API"):
        catalog.sync_files({"made": tmp_path / "made.yaml"})


def test_names_that_would_leave_the_folder_are_refused(catalog: Catalog) -> None:
    for name in ("../x", "/etc", "A"):
        with pytest.raises(SettingsError):
            catalog.find(name)
    with pytest.raises(NotFound, match="no pipeline 'ghost'"):
        catalog.get("ghost")
