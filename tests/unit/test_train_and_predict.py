from pathlib import Path

import numpy as np
import torch

from mlaas.core.model_settings import CnnSettings
from mlaas.core.settings import LoadSettings
from mlaas.core.tasks import task_of
from mlaas.families.image import ImageFamily, images_to_table
from mlaas.families.image_models import PixelPreprocessor
from mlaas.modeling.lightning_fit import ResidentBatches
from mlaas.modeling.models import NetworkModel, load_model

family = ImageFamily()


def test_resident_batches_cover_every_row_once_and_reshuffle() -> None:
    inputs = torch.arange(10).reshape(10, 1)
    batches = ResidentBatches(inputs, torch.arange(10), batch_size=4, shuffle=True, seed=0)
    assert len(batches) == 3
    first = torch.cat([x for x, _ in batches]).flatten().tolist()
    second = torch.cat([x for x, _ in batches]).flatten().tolist()
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10))
    assert first != second
    pairs = [(x.flatten().tolist(), y.tolist()) for x, y in batches]
    assert all(xs == ys for xs, ys in pairs)  # inputs and targets stay aligned


def test_unshuffled_batches_keep_order() -> None:
    batches = ResidentBatches(torch.arange(5), torch.arange(5), batch_size=2, shuffle=False)
    assert [x.tolist() for x, _ in batches] == [[0, 1], [2, 3], [4]]


def test_a_saved_model_loads_back_to_the_same_predictions(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(4, 8, 8, 1)).astype(np.float32)
    table = images_to_table(images, [0, 1, 2, 3])
    card = family.model_card(table, LoadSettings(source="digits"), CnnSettings(conv_channels=[4]))
    network = family.recipe(card).network(None).eval()
    NetworkModel(card, PixelPreprocessor(), network).save(tmp_path / "model")
    model = load_model(tmp_path / "model")
    instances = images[..., 0]
    expected = torch.softmax(network(torch.from_numpy(instances)), dim=1).detach().numpy()
    np.testing.assert_allclose(model.predict(instances), expected, rtol=1e-5)
    described = task_of(card).describe(model.predict(instances), card)
    assert described[0]["label"] in card.classes
    assert set(described[0]["probabilities"]) == {str(c) for c in card.classes}
    assert abs(sum(described[0]["probabilities"].values()) - 1.0) < 1e-4
