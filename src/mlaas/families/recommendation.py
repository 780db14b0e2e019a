"""The recommendation family: (user, item, rating) triples in, predicted ratings and top-k out.

Shipped data: MovieLens 100k (the `recbole` package's example file, read by path). Or the
user's CSV of user, item and rating columns. The model is biased matrix factorisation,
rating = mu + b_user + b_item + <p_user, q_item>, trained with Lightning
(`recommendation_models`); evaluation logs global-mean and bias-only baselines beside it, and
precision@k / recall@k of its top-k lists (`recommendation_ranking`).

Serving: `/predict` rates (user, item) pairs of the training data; `/recommend` lists a user's
top-k items by predicted rating, never one the user rated anywhere in the data set (training,
validation or test split: the index remembers all of them, see `IdIndex.remember`). A user the
model was not trained on gets the items with the most training ratings (`fallback:
popularity`). Each item carries both `predicted_rating` (the model's, clamped to the rating
range; for a user it was not trained on, the mean plus the item's bias) and `rating_count` (its
ratings in the training split): one meaning per field, whatever the list is ranked by.

The served model is the evaluated one, not refitted on all the data after evaluation: its test
metrics, its champion comparison and its registered files describe exactly what answers, and
refitting would serve weights nobody measured. The price: users and items that only the
validation or test split holds are unknown to `/predict`, and such users get the popularity
fallback (without the items they rated).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import pyarrow as pa
from pydantic import ConfigDict, Field, create_model

from mlaas.core.errors import SettingsError
from mlaas.core.model_settings import MatrixFactorizationSettings, ModelSettings
from mlaas.core.reference import InputSummary
from mlaas.core.settings import EvaluateSettings, LoadSettings, ValidateSettings
from mlaas.families.base import (
    ArrayInstances,
    ModelCard,
    Recipe,
    TaskName,
    as_text,
    package_file,
    require_columns,
    set_by,
    shipped_source,
)
from mlaas.families.descriptions import describe_ratings, learn_ratings
from mlaas.families.inputs import ITEM, RATING, USER
from mlaas.families.outlines import RECOMMENDATION_OUTLINE
from mlaas.families.user_files import read_user_table

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation


def _read_movielens_100k() -> pd.DataFrame:
    path = package_file("recbole", "recbole/dataset_example/ml-100k/ml-100k.inter")
    frame = pd.read_csv(path, sep="\t", dtype=str)
    frame.columns = [name.split(":")[0] for name in frame.columns]  # "user_id:token" -> user_id
    return frame[[USER, ITEM, RATING]]


SOURCES = {"movielens_100k": _read_movielens_100k}


class RecommendationFamily:
    name = RECOMMENDATION_OUTLINE.name
    models = RECOMMENDATION_OUTLINE.model_names

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(SOURCES)

    def task(self, load: LoadSettings) -> TaskName:
        return "rating"

    def target_column(self, load: LoadSettings) -> str:
        return RATING

    def load(self, load: LoadSettings) -> pa.Table:
        read = shipped_source(SOURCES, load, self.name, "a CSV of user, item and rating")
        if read is not None:
            frame = read()
        else:
            columns = [load.user_column, load.item_column, load.target]
            if None in columns:
                raise SettingsError(
                    "load.user_column, load.item_column and load.target: name the user, "
                    "item and rating columns"
                )
            frame = read_user_table(load.data_path)
            require_columns(frame, [str(c) for c in columns], "load")
            frame = frame[columns].set_axis([USER, ITEM, RATING], axis=1)
        return pa.table(
            {
                USER: pa.array(as_text(frame[USER]), pa.string()),
                ITEM: pa.array(as_text(frame[ITEM]), pa.string()),
                RATING: pa.array(pd.to_numeric(frame[RATING], errors="coerce"), pa.float64()),
            }
        )

    def validation_frame(self, table: pa.Table, load: LoadSettings) -> pd.DataFrame:
        return table.to_pandas()

    def reference_profile(self, frame: pd.DataFrame, load: LoadSettings) -> dict[str, Any]:
        return {}

    def expectations(
        self,
        frame: pd.DataFrame,
        load: LoadSettings,
        cfg: ValidateSettings,
        reference: dict[str, Any] | None,
    ) -> list[Expectation]:
        from great_expectations import expectations as gxe

        low, high = load.rating_range
        return [
            gxe.ExpectTableRowCountToBeBetween(
                min_value=cfg.min_rows, meta=set_by("validate.min_rows")
            ),
            gxe.ExpectColumnValuesToNotBeNull(column=USER),
            gxe.ExpectColumnValuesToNotBeNull(column=ITEM),
            gxe.ExpectColumnValuesToNotBeNull(column=RATING),
            gxe.ExpectColumnValuesToBeBetween(
                column=RATING, min_value=low, max_value=high, meta=set_by("load.rating_range")
            ),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=[USER, ITEM]),
        ]

    def model_card(self, table: pa.Table, load: LoadSettings, model: ModelSettings) -> ModelCard:
        RECOMMENDATION_OUTLINE.require_model(model)
        return ModelCard(
            family=self.name,
            task="rating",
            dataset=load.dataset_name,
            target=RATING,
            model=model,
            target_range=list(load.rating_range),
            inputs={},
        )

    def features(self, table: pa.Table, card: ModelCard) -> pd.DataFrame:
        return table.select([USER, ITEM]).to_pandas()

    def recipe(self, card: ModelCard) -> Recipe:
        from mlaas.families.recommendation_models import matrix_factorization_recipe  # torch

        return matrix_factorization_recipe(card)

    def array_instances(self, card: ModelCard) -> ArrayInstances | None:
        return None  # instances are objects

    def instance_type(self, card: ModelCard) -> Any:
        # Ids as the data has them: text, or whole numbers (3.5 or "" is not an id).
        identifier = (
            Annotated[str, Field(min_length=1, max_length=256)] | Annotated[int, Field(strict=True)]
        )
        return create_model(
            "RatingInstance",
            __config__=ConfigDict(extra="forbid"),
            user_id=(identifier, Field(description="a user id from the training data")),
            item_id=(identifier, Field(description="an item id from the training data")),
        )

    def instances_to_features(self, instances: list[Any], card: ModelCard) -> pd.DataFrame:
        rows = [item.model_dump() if hasattr(item, "model_dump") else item for item in instances]
        return pd.DataFrame(
            {
                USER: [str(row[USER]) for row in rows],
                ITEM: [str(row[ITEM]) for row in rows],
            }
        )

    def example_instances(self, table: pa.Table, card: ModelCard, count: int) -> list[Any]:
        return table.select([USER, ITEM]).slice(0, count).to_pylist()

    def labelled_table(self, instances: list[Any], labels: list[Any], card: ModelCard) -> pa.Table:
        pairs = self.instances_to_features(instances, card)
        return pa.table(
            {
                USER: pa.array(pairs[USER].tolist(), pa.string()),
                ITEM: pa.array(pairs[ITEM].tolist(), pa.string()),
                RATING: pa.array([float(label) for label in labels], pa.float64()),
            }
        )

    def learn_inputs(self, features: pd.DataFrame, card: ModelCard) -> dict[str, Any]:
        return learn_ratings(features, USER, ITEM)

    def describe_inputs(
        self, features: pd.DataFrame, card: ModelCard, learned: dict[str, Any]
    ) -> InputSummary:
        return describe_ratings(features, USER, ITEM, learned)

    def extra_metrics(
        self, model: Any, train: pa.Table, test: pa.Table, cfg: EvaluateSettings
    ) -> dict[str, float]:
        from mlaas.families.recommendation_ranking import baseline_metrics, ranking_metrics

        relevant_rating = model.card.model_as(MatrixFactorizationSettings).relevant_rating
        train_frame, test_frame = train.to_pandas(), test.to_pandas()
        return ranking_metrics(model, test_frame, cfg.top_k, relevant_rating) | baseline_metrics(
            train_frame, test_frame
        )
