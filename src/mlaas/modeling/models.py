"""A trained model on disk, and the one prediction path shared by evaluation and serving.

A model folder holds `card.json` (what the model is and how to rebuild it) and either
`weights.pt` plus `preprocessor/` (a network Lightning trained) or `pipeline.skops` (a
scikit-learn pipeline). Loading never unpickles arbitrary objects: weights are read with
`weights_only=True`, pipelines with skops and an explicit list of trusted types.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from mlaas.core.errors import UntrustedModel
from mlaas.core.model_card import ModelCard, read_card, write_card
from mlaas.core.tasks import task_of
from mlaas.families import get_family
from mlaas.families.base import NetworkRecipe, PipelineRecipe, Preprocessor
from mlaas.stores.skops_files import load_skops

WEIGHTS_FILE = "weights.pt"
PREPROCESSOR_DIR = "preprocessor"
PIPELINE_FILE = "pipeline.skops"


class Model(Protocol):
    card: ModelCard

    def predict(self, features: Any) -> np.ndarray:
        """Class probabilities (n, classes), or values (n,)."""
        ...

    @property
    def checks_input(self) -> bool:
        """Whether `check` can refuse anything (if not, callers skip building its input)."""
        ...

    def check(self, features: Any) -> None:
        """Raise InvalidInstance for input the model cannot answer (before batching it)."""
        ...

    def save(self, model_dir: Path) -> None: ...


class StandardizedOutput(nn.Module):
    """Lets a regression network learn standardised targets: its outputs are scaled back here.

    Without it a network starts predicting about 0 for targets in the hundreds and spends its
    epochs climbing there. The mean and scale are buffers, saved with the weights.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(0.0))
        self.register_buffer("scale", torch.tensor(1.0))

    def fit_targets(self, targets: np.ndarray) -> None:
        self.mean = torch.tensor(float(np.mean(targets)))
        self.scale = torch.tensor(float(np.std(targets)) or 1.0)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network(inputs) * self.scale + self.mean


def build_network(card: ModelCard, recipe: NetworkRecipe, preprocessor: Preprocessor) -> nn.Module:
    """The recipe's network, with standardised outputs for regression."""
    network = recipe.network(preprocessor)
    return StandardizedOutput(network) if card.task == "regression" else network


class NetworkModel:
    """A preprocessor and a network in eval mode: raw features in, task outputs out."""

    def __init__(
        self, card: ModelCard, preprocessor: Preprocessor, network: torch.nn.Module
    ) -> None:
        self.card = card
        self.preprocessor = preprocessor
        self.network = network.eval()
        self.task = task_of(card)
        self.device = next(network.parameters()).device

    @property
    def checks_input(self) -> bool:
        # Only some preprocessors can refuse input (ids unseen in training); the rest accept all.
        return hasattr(self.preprocessor, "check")

    def check(self, features: Any) -> None:
        if self.checks_input:
            self.preprocessor.check(features)  # type: ignore[attr-defined]

    @torch.inference_mode()
    def predict(self, features: Any, batch_size: int = 4096) -> np.ndarray:
        inputs = self.preprocessor.transform(features)
        outputs = [
            self.task.outputs(
                self.network(inputs[start : start + batch_size].to(self.device)), self.card
            )
            for start in range(0, len(inputs), batch_size)
        ]
        return torch.cat(outputs).float().cpu().numpy()

    def save(self, model_dir: Path) -> None:
        write_card(self.card, model_dir)
        self.preprocessor.save(model_dir / PREPROCESSOR_DIR)
        state = {key: value.detach().cpu() for key, value in self.network.state_dict().items()}
        torch.save(state, model_dir / WEIGHTS_FILE)

    @classmethod
    def load(cls, model_dir: Path, card: ModelCard, recipe: NetworkRecipe) -> NetworkModel:
        preprocessor = recipe.load_preprocessor(model_dir / PREPROCESSOR_DIR)
        network = build_network(card, recipe, preprocessor)
        network.load_state_dict(load_weights(model_dir / WEIGHTS_FILE))
        return cls(card, preprocessor, network)


class PipelineModel:
    """A fitted scikit-learn pipeline (preprocessing included): raw rows in, task outputs out."""

    def __init__(
        self,
        card: ModelCard,
        pipeline: Any,
        compile_preprocess: Callable[[Any], Callable[[Any], Any] | None] | None = None,
    ) -> None:
        self.card = card
        self.pipeline = pipeline
        # The estimator is called on the compiled preprocessing's output: the same numbers, and
        # most of a served row's cost was scikit-learn's checks inside its ColumnTransformer.
        preprocess = (
            compile_preprocess(pipeline.steps[0][1])
            if compile_preprocess is not None and len(pipeline.steps) == 2
            else None
        )
        self.preprocess = preprocess
        self.estimator = pipeline.steps[-1][1] if preprocess is not None else pipeline

    checks_input = False

    def check(self, features: Any) -> None:
        pass

    def predict(self, features: Any) -> np.ndarray:
        inputs = features if self.preprocess is None else self.preprocess(features)
        if self.card.task != "classification":
            return np.asarray(self.estimator.predict(inputs), dtype=np.float32)
        assert self.card.classes is not None
        # Trained on output positions; a class absent from the training rows has no column.
        probabilities = np.zeros((len(features), len(self.card.classes)), dtype=np.float32)
        probabilities[:, self.pipeline.classes_] = self.estimator.predict_proba(inputs)
        return probabilities

    def save(self, model_dir: Path) -> None:
        import skops.io

        write_card(self.card, model_dir)
        skops.io.dump(self.pipeline, model_dir / PIPELINE_FILE)

    @classmethod
    def load(cls, model_dir: Path, card: ModelCard, recipe: PipelineRecipe) -> PipelineModel:
        pipeline = load_skops(model_dir / PIPELINE_FILE, recipe.trusted_types)
        return cls(card, pipeline, recipe.compile_preprocess)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict of tensors; a file that would run code (any pickled object) is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UntrustedModel(
            f"{path} holds objects besides tensors, which loading would have to run: "
            f"refusing to load it ({str(error).splitlines()[0]})"
        ) from None


def load_model(model_dir: Path) -> NetworkModel | PipelineModel:
    card = read_card(model_dir)
    # The family registry is a layer below this module (family modules load skops files through
    # `mlaas.stores.skops_files`, never through here), so it is imported at the top: importing it in
    # here would hide the dependency from tests/unit/test_import_graph.py, not remove it.
    recipe = get_family(card.family).recipe(card)
    if isinstance(recipe, NetworkRecipe):
        return NetworkModel.load(model_dir, card, recipe)
    return PipelineModel.load(model_dir, card, recipe)
