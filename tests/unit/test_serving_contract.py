"""The serving contract and the out-of-distribution score: what a model learned of its inputs,
saved with it, and every answer checked against it (issue 12: "inputs outside what the model
learned")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from mlaas.core.model_settings import LogisticRegressionSettings
from mlaas.core.reference import MonitorReference, ood_scores, spreads_of, with_predictions
from mlaas.core.settings import LoadSettings, ServeSettings, TrainSettings
from mlaas.core.tasks import task_of
from mlaas.families.descriptions import describe_images, describe_texts, learn_texts
from mlaas.families.tabular import TabularFamily
from mlaas.modeling.fitting import fit_model
from mlaas.modeling.models import PipelineModel
from mlaas.modeling.reference import build_reference, read_reference, save_reference
from mlaas.serving.observation import observe, watch_of
from mlaas.serving.recording import label_problem, request_id_from

family = TabularFamily()


@pytest.fixture(scope="module")
def penguins(tmp_path_factory: pytest.TempPathFactory) -> tuple[PipelineModel, MonitorReference]:
    """A classifier of a penguin-like table (two numbers, two categories), and its reference."""
    folder = tmp_path_factory.mktemp("penguins")
    rng = np.random.default_rng(0)
    rows = 400
    bill = rng.normal(44, 5, rows)
    frame = pd.DataFrame(
        {
            "bill_length_mm": bill,
            "year": rng.choice([2007, 2008, 2009], rows).astype(float),
            "island": rng.choice(["Biscoe", "Dream", "Torgersen"], rows),
            "sex": rng.choice(["male", "female"], rows),
            "species": np.where(bill > 44, "Gentoo", "Adelie"),
        }
    )
    path = folder / "penguins.csv"
    frame.to_csv(path, index=False)
    load = LoadSettings(source=None, path=path, target="species")
    table = family.load(load)
    card = family.model_card(table, load, LogisticRegressionSettings())
    cfg = TrainSettings(model=LogisticRegressionSettings(), accelerator="cpu")
    train, test = table.slice(0, 300), table.slice(300)
    model, _ = fit_model(family, card, train, test, cfg, folder / "checkpoints")
    assert isinstance(model, PipelineModel)
    return model, build_reference(family, model, train, test, seed=0)


def _observed(model: PipelineModel, reference: MonitorReference, rows: list[dict], **serve):
    watch = watch_of(reference, ServeSettings(**serve))
    features = family.instances_to_features(rows, model.card)
    predictions = task_of(model.card).describe(model.predict(features), model.card)
    described = family.describe_inputs(features, model.card, watch.learned)
    return observe(with_predictions(described, predictions, "classification"), predictions, watch)


USUAL = {"bill_length_mm": 45.0, "year": 2008.0, "island": "Dream", "sex": "male"}


def test_a_new_category_and_a_number_past_the_training_range_are_named_with_what_was_learned(
    penguins: tuple[PipelineModel, MonitorReference],
) -> None:
    model, reference = penguins
    strange = {"bill_length_mm": 600.0, "year": 2030.0, "island": "Atlantis", "sex": "unknown"}
    usual, odd = _observed(model, reference, [USUAL, strange])
    assert usual.warnings == [] and not usual.out_of_contract
    text = " | ".join(odd.warnings)
    assert odd.out_of_contract
    assert "bill_length_mm: 600 is outside the training range [" in text
    assert "year: 2030 is outside the training range [2007, 2009]" in text
    assert "island: 'Atlantis' was never seen in training (it saw 'Biscoe', 'Dream'" in text
    assert "sex: 'unknown' was never seen" in text


def test_the_ood_score_flags_the_calibrated_share_and_a_far_input(
    penguins: tuple[PipelineModel, MonitorReference],
) -> None:
    model, reference = penguins
    scores = np.asarray(reference.test_ood_scores)
    threshold = reference.ood_threshold(0.05)
    assert 0.0 < (scores > threshold).mean() <= 0.05 + 1 / len(scores)
    far = dict(USUAL, bill_length_mm=440.0)
    (odd,) = _observed(model, reference, [far], ood_flag_share=0.05)
    assert odd.out_of_distribution and odd.ood_score is not None and odd.ood_score > threshold
    assert any(w.startswith("out of distribution: score") for w in odd.warnings)
    assert odd.features["ood_score"] == odd.ood_score


def test_allow_keeps_contract_warnings_out_of_the_answer(
    penguins: tuple[PipelineModel, MonitorReference],
) -> None:
    model, reference = penguins
    atlantis = dict(USUAL, island="Atlantis")
    (answer,) = _observed(model, reference, [atlantis], out_of_contract="allow")
    assert not any("island" in warning for warning in answer.warnings)


def test_the_reference_is_saved_with_the_model_and_read_back(
    penguins: tuple[PipelineModel, MonitorReference], tmp_path: Path
) -> None:
    _, reference = penguins
    save_reference(reference, tmp_path)
    assert read_reference(tmp_path) == reference
    assert read_reference(tmp_path / "nowhere") is None  # a model from before references
    assert set(reference.columns) >= {"bill_length_mm", "island", "predicted", "confidence"}
    assert reference.kinds["island"] == "category" and reference.kinds["confidence"] == "number"
    assert len(reference.test_predictions) == 100  # the test split's answers, for prediction drift


def test_a_blank_image_is_far_from_digits_though_a_classifier_would_be_confident() -> None:
    digits = load_digits().images  # 8x8, intensities 0..16
    train, test = digits[:1200], digits[1200:]
    reference = describe_images(train, pixel_max=16.0)
    spreads = spreads_of(reference.columns, reference.kinds)
    test_scores = ood_scores(describe_images(test, 16.0).columns, spreads)
    threshold = float(np.quantile(test_scores, 0.99))
    blank = ood_scores(describe_images(np.zeros((1, 8, 8)), 16.0).columns, spreads)
    assert blank[0] > threshold


def test_a_text_of_unseen_words_has_a_high_unknown_word_share() -> None:
    learned = learn_texts(["the film was good", "the film was bad", "a good film", "bad acting"])
    summary = describe_texts(["the film was good", "zyx qwv plonk"], learned)
    assert summary.columns["unknown_word_share"] == [0.0, 1.0]
    assert summary.embeddings is not None and summary.embeddings.shape == (2, 16)


@pytest.mark.parametrize(
    ("label", "task", "refused"),
    [(3, "classification", False), ("3", "classification", True), (12, "classification", True),
     (True, "classification", True), (2.5, "regression", False), ("2.5", "regression", True),
     (True, "regression", True)],
)  # fmt: skip
def test_feedback_labels_must_be_the_models_own_kind(label: object, task: str, refused: bool):
    from mlaas.core.model_card import ModelCard

    card = ModelCard(
        family="tabular",
        task=task,  # type: ignore[arg-type]
        dataset="d",
        target="y",
        model=LogisticRegressionSettings(),
        classes=list(range(10)) if task == "classification" else None,
        inputs={},
    )
    assert (label_problem(label, card) is not None) is refused  # type: ignore[arg-type]


def test_a_usable_client_request_id_is_kept_and_anything_else_replaced() -> None:
    assert request_id_from("order-42.a:1") == "order-42.a:1"
    for unusable in (None, "", "has space", "x" * 129, "-starts-with-dash", "é"):
        replaced = request_id_from(unusable)
        assert replaced != unusable and len(replaced) == 32
