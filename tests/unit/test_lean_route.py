"""`read_array_instances`: which /predict bodies the lean route answers itself. Anything it does
not take goes to BentoML's route, which refuses bad input naming the field (tests/e2e)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlaas.families.base import ArrayInstances
from mlaas.serving.lean_route import read_array_instances

GREY = ArrayInstances(shape=(2, 3), low=0.0, high=255.0)
IMAGE = [[0, 1.5, 255], [3e1, 4, 5]]


def _read(body: str | bytes, spec: ArrayInstances = GREY, most: int = 4) -> object:
    return read_array_instances(body.encode() if isinstance(body, str) else body, spec, most)


def test_plain_arrays_of_numbers_are_read_as_arrays() -> None:
    read = _read(json.dumps({"instances": [IMAGE, IMAGE]}))
    assert isinstance(read, list) and len(read) == 2
    np.testing.assert_array_equal(read[0], np.array(IMAGE, dtype=np.float64))
    assert _read('  {\n "instances" :\t[[[1,2,3],[4,5,6]]] }\n') is not None


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"instances": [IMAGE], "extra": 1}, id="another key"),
        pytest.param({"other": [IMAGE]}, id="not instances"),
        pytest.param({"instances": []}, id="no instance"),
        pytest.param({"instances": [IMAGE] * 5}, id="more than the limit"),
        pytest.param({"instances": [[[0, 1, 2]]]}, id="wrong shape"),
        pytest.param({"instances": [[[0, 1, 2], [3, 4]]]}, id="ragged rows"),
        pytest.param({"instances": [[[0, 1, 256], [3, 4, 5]]]}, id="past the range"),
        pytest.param({"instances": [[[0, 1, -0.5], [3, 4, 5]]]}, id="below the range"),
        pytest.param({"instances": [[[0, 1, True], [3, 4, 5]]]}, id="a boolean"),
        pytest.param({"instances": [[[0, 1, None], [3, 4, 5]]]}, id="a null"),
        pytest.param({"instances": [[[0, 1, "2"], [3, 4, 5]]]}, id="a string"),
        pytest.param({"instances": [{"b64": "AAAA"}]}, id="an encoded image"),
        pytest.param({"instances": IMAGE}, id="one image not in a list"),
    ],
)
def test_every_other_body_is_left_to_bentomls_route(body: object) -> None:
    assert _read(json.dumps(body)) is None


@pytest.mark.parametrize(
    "text",
    [
        '{"instances": [[[0, 1, 2], [3, 4, 5]]]',  # unclosed
        '{"instances": [[[0, 1, 2], [3, 4, 5]]]}}',
        '{"instances": [[[0, 1, 2], [3, 4, 1e400]]]}',  # infinite
        '{"instances": [[[0, 1, 2], [3, 4, 1' + "0" * 30 + "]]]}",  # past 64 bits
        '{"instances": [[[0, 1, 2], [3, 4, 5,]]]}',  # trailing comma
        '{"instances": [[[0, 1, 2], [3, 4, --5]]]}',
        "",
        "{}",
    ],
)
def test_what_is_not_json_numbers_is_left_to_bentomls_route(text: str) -> None:
    assert _read(text) is None
