"""The MLflow pyfunc wrapper of an mlaas model, logged as code (no pickled object).

MLflow runs this file when it loads a registered version; it predicts through `load_model`, the
path evaluation and serving use. Input is the family's raw model input: an array of images, or
a frame of rows (tabular features, a `text` column, `user_id` and `item_id`).
"""

from pathlib import Path
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

from mlaas.models import load_model


class MlaasPyfunc(PythonModel):
    def load_context(self, context: Any) -> None:
        self.model = load_model(Path(context.artifacts["model"]))

    # No annotations: MLflow would read them as a schema; the logged signature is the schema.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return self.model.predict(model_input)


mlflow.models.set_model(MlaasPyfunc())
