"""The registered MLflow model's contract: the endpoint's instances in, its predictions out.

`mlflow.pyfunc.load_model("models:/NAME@champion").predict(...)`, `mlflow models predict` and
`mlflow models serve` take what `POST /predict` takes and answer what it answers. The instances
are checked by the family's own pydantic type (the endpoint's schema), then go through the
preprocessing and the description of outputs that serving uses. MLflow hands instances over
in several forms (the JSON lists themselves, numpy arrays, a frame of records, or the columns
its scoring server makes of records sent as `instances`); `as_instances` turns each of them
back into the JSON list the endpoint would have received.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pandas as pd
from pydantic import Field, TypeAdapter, ValidationError

from mlaas.core.tasks import task_of
from mlaas.families import get_family
from mlaas.families.base import InvalidInstance

if TYPE_CHECKING:
    from mlaas.modeling.models import Model

# As many problems as a reader takes in at once; the count of the rest follows them.
ERRORS_NAMED = 3


class InvalidInput(ValueError):
    """Input the endpoint would refuse with a 400; the message names the field and the fix."""


class InstancePredictor:
    """A model behind the endpoint's contract: validated instances in, served predictions out."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.card = model.card
        self.family = get_family(self.card.family)
        self.task = task_of(self.card)
        instance = self.family.instance_type(self.card)
        self.adapter: TypeAdapter[list[Any]] = TypeAdapter(
            Annotated[list[instance], Field(min_length=1)]  # type: ignore[valid-type,arg-type]
        )

    def instances_schema(self) -> dict[str, Any]:
        """The JSON schema of the instances list (the endpoint's `instances` field)."""
        return self.adapter.json_schema()

    def predict(self, model_input: Any) -> list[dict[str, Any]]:
        """Predictions as `/predict` gives them: label and probabilities, value, or rating."""
        instances = self.validated(as_instances(model_input))
        features = self.family.instances_to_features(instances, self.card)
        try:
            self.model.check(features)
        except InvalidInstance as error:
            raise InvalidInput(f"instances: {error}") from None
        return self.task.describe(self.model.predict(features), self.card)

    def validated(self, instances: list[Any]) -> list[Any]:
        try:
            return self.adapter.validate_python(instances)
        except ValidationError as error:
            raise InvalidInput(describe_errors(error)) from None


def as_instances(model_input: Any) -> list[Any]:
    """Any form MLflow passes the instances in, as the JSON list a client would send."""
    if isinstance(model_input, pd.DataFrame):
        # Rows are records; pandas marks a missing value NaN where a client sends null.
        present = model_input.astype(object).where(model_input.notna(), None)
        return [_plain(record) for record in present.to_dict(orient="records")]
    if isinstance(model_input, Mapping):
        return _records_from_columns(model_input)
    if isinstance(model_input, list | tuple | np.ndarray | pd.Series):
        return list(_plain(list(model_input)))
    raise InvalidInput(
        f"instances: expected a list of instances, got {type(model_input).__name__}; "
        "send what POST /predict takes in its `instances` field"
    )


def _records_from_columns(columns: Mapping[str, Any]) -> list[Any]:
    """MLflow's scoring server turns records sent as `instances` into a column per key."""
    if not columns or not all(isinstance(v, list | tuple | np.ndarray) for v in columns.values()):
        raise InvalidInput(
            "instances: expected a list of instances, got one object; wrap it in a list: [{...}]"
        )
    lengths = {len(values) for values in columns.values()}
    if len(lengths) != 1:
        raise InvalidInput("instances: every instance must have the same fields")
    rows = lengths.pop()
    plain = {name: _plain(list(values)) for name, values in columns.items()}
    return [{name: values[row] for name, values in plain.items()} for row in range(rows)]


def _plain(value: Any) -> Any:
    """Numpy arrays and scalars, at any depth, as the lists and numbers JSON holds."""
    if isinstance(value, np.ndarray):
        value = value.tolist()  # an object array keeps its elements: they are converted below
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def describe_errors(error: ValidationError) -> str:
    """Pydantic's errors as the endpoint words them: `instances.0.age: what is wrong`."""
    problems = [
        ".".join(["instances", *(str(part) for part in problem["loc"])]) + f": {problem['msg']}"
        for problem in error.errors(include_url=False)
    ]
    more = f" (and {len(problems) - ERRORS_NAMED} more)" if len(problems) > ERRORS_NAMED else ""
    return "; ".join(problems[:ERRORS_NAMED]) + more
