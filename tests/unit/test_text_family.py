"""The text family on slices of the shipped corpora and a tiny user file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from mlaas.core.errors import SettingsError
from mlaas.core.model_settings import TfidfLinearSettings, TransformerSettings
from mlaas.core.settings import LoadSettings, ValidateSettings
from mlaas.families.text import TextFamily
from mlaas.families.text_models import TextTransformer, Vocabulary, WordPieces
from mlaas.stages.validate import check_frame

family = TextFamily()


def test_the_shipped_corpora_load_with_their_labels() -> None:
    reviews = family.load(LoadSettings(source="rotten_tomatoes"))
    assert reviews.num_rows > 12_000
    assert set(reviews.column("label").to_pylist()) == {"fresh", "rotten"}
    news = family.load(LoadSettings(source="bbc_news"))
    assert news.num_rows == 2225
    assert set(news.column("label").to_pylist()) == {
        "business", "entertainment", "politics", "sports", "tech",
    }  # fmt: skip


def test_a_user_csv_needs_its_text_and_label_columns(tmp_path: Path) -> None:
    path = tmp_path / "tickets.csv"
    pd.DataFrame({"body": ["printer broken", "café fermé"], "team": ["it", "ops"]}).to_csv(
        path, index=False
    )
    load = LoadSettings(source=None, path=path, text_column="body", target="team")
    table = family.load(load)
    assert table.column("text").to_pylist() == ["printer broken", "café fermé"]
    with pytest.raises(SettingsError, match="not in the data"):
        family.load(load.model_copy(update={"text_column": "subject"}))


def test_the_vocabulary_is_deterministic_and_maps_unknown_words() -> None:
    texts = pd.DataFrame({"text": ["the film is good", "the film is bad", "good good"]})
    vocabulary = Vocabulary(size=100, max_tokens=8).fit(texts)
    assert vocabulary.tokens[:2] == ["good", "film"] or vocabulary.tokens[0] == "good"
    ids = vocabulary.transform(pd.DataFrame({"text": ["the unseen film"]}))
    assert ids.shape == (1, 3) and ids[0, 1].item() == 1  # 1: unknown
    assert Vocabulary(100, 8).fit(texts).tokens == vocabulary.tokens


def test_the_transformer_reads_word_pieces_with_frozen_pretrained_embeddings() -> None:
    pieces = WordPieces(max_tokens=16)
    ids = pieces.transform(pd.DataFrame({"text": ["A fine film.", "Dull"]}))
    assert ids.shape[0] == 2 and ids[1, -1].item() == 0  # the shorter text is padded with 0
    network = TextTransformer(pieces.width, TransformerSettings(), 2, pieces.pretrained())
    assert network(ids).shape == (2, 2)
    trainable = {name for name, p in network.named_parameters()}
    assert "pretrained" not in trainable and "pretrained" in dict(network.named_buffers())


def test_the_instance_schema_refuses_empty_blank_and_oversized_text() -> None:
    table = family.load(LoadSettings(source="bbc_news", max_rows=50))
    card = family.model_card(
        table, LoadSettings(source="bbc_news", max_text_chars=100), TfidfLinearSettings()
    )
    adapter = TypeAdapter(family.instance_type(card))
    assert adapter.validate_python("Shares rose") == "Shares rose"
    for bad in ("", "   \n", "x" * 101, 42, None):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)


def test_the_gate_refuses_blank_text_and_unseen_labels(tmp_path: Path) -> None:
    load = LoadSettings(source="rotten_tomatoes")
    frame = family.validation_frame(family.load(load), load)
    reference = family.reference_profile(frame, load)
    frame.loc[0, "text_blank"] = True
    frame.loc[1, "text_chars"] = None
    frame.loc[2, "label"] = "maybe"
    ok, result = check_frame(
        frame, family.expectations(frame, load, ValidateSettings(), reference), "t", tmp_path
    )
    failed = {
        (r["expectation_config"]["type"], r["expectation_config"]["kwargs"].get("column"))
        for r in result["results"]
        if not r["success"]
    }
    assert not ok
    assert ("expect_column_values_to_be_in_set", "text_blank") in failed
    assert ("expect_column_values_to_not_be_null", "text_chars") in failed
    assert ("expect_column_values_to_be_in_set", "label") in failed


def test_torch_is_deterministic_for_the_same_seed() -> None:
    torch.manual_seed(0)
    first = TextTransformer(50, TransformerSettings(pretrained_embeddings=False), 2)
    torch.manual_seed(0)
    second = TextTransformer(50, TransformerSettings(pretrained_embeddings=False), 2)
    ids = torch.tensor([[2, 3, 4, 0]])
    first.eval(), second.eval()
    assert torch.equal(first(ids), second(ids))
