"""The MLflow pyfunc wrapper of an mlaas model, logged as code (no pickled object).

MLflow runs this file when it loads a registered version. It takes what the endpoint's
`POST /predict` takes (the instances: pixel arrays, records, texts, user/item pairs) and
answers its predictions (labels and probabilities, values, ratings), through the same
validation, preprocessing and description of outputs (`mlaas.modeling.pyfunc`).
"""

from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from mlaas.modeling.models import load_model
from mlaas.modeling.pyfunc import InstancePredictor, InvalidInput


class MlaasPyfunc(PythonModel):
    def load_context(self, context: Any) -> None:
        self.predictor = InstancePredictor(load_model(Path(context.artifacts["model"])))

    # No annotations: MLflow would read them as a schema and enforce it before our own checks,
    # refusing input the endpoint accepts (uint8 arrays, records with nulls).
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        try:
            return self.predictor.predict(model_input)
        except InvalidInput as error:
            # An MlflowException keeps its message, and MLflow's scoring server answers 400.
            raise MlflowException.invalid_parameter_value(str(error)) from None


mlflow.models.set_model(MlaasPyfunc())
