"""The MLflow pyfunc wrapper of an mlaas model, logged as code (no pickled object).

MLflow runs this file when it loads a registered version; it predicts through the same
`Predictor` as evaluation and serving.
"""

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

from mlaas.predictor import Predictor


class MlaasPyfunc(PythonModel):
    def load_context(self, context: Any) -> None:
        self.predictor = Predictor.load(Path(context.artifacts["model"]))

    # No annotations: MLflow would read them as a schema; the logged signature is the schema.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return self.predictor.predict_proba(np.asarray(model_input, dtype=np.float32))


mlflow.models.set_model(MlaasPyfunc())
