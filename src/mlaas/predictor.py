"""A trained model on disk, and the one prediction path shared by evaluation and serving.

A model folder holds `card.json` (how to rebuild the network) and `weights.pt` (its state
dict). Loading never unpickles objects: weights are read with `weights_only=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlaas.families import ModelCard, get_family

CARD_FILE = "card.json"
WEIGHTS_FILE = "weights.pt"


def save_model(network: torch.nn.Module, card: ModelCard, model_dir: Path) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / CARD_FILE).write_text(card.model_dump_json(indent=2) + "\n")
    state = {key: value.detach().cpu() for key, value in network.state_dict().items()}
    torch.save(state, model_dir / WEIGHTS_FILE)


def read_card(model_dir: Path) -> ModelCard:
    return ModelCard.model_validate_json((model_dir / CARD_FILE).read_text())


class Predictor:
    """A network in eval mode with its card: raw instances in, class probabilities out."""

    def __init__(self, network: torch.nn.Module, card: ModelCard) -> None:
        self.network = network.eval()
        self.card = card
        self.device = next(network.parameters()).device

    @classmethod
    def load(cls, model_dir: Path, device: str = "cpu") -> Predictor:
        card = read_card(model_dir)
        network = get_family(card.family).build_network(card)
        state = torch.load(model_dir / WEIGHTS_FILE, map_location=device, weights_only=True)
        network.load_state_dict(state)
        return cls(network.to(device), card)

    @torch.inference_mode()
    def predict_proba(
        self, instances: np.ndarray | torch.Tensor, batch_size: int = 4096
    ) -> np.ndarray:
        """Class probabilities, (n, classes); large inputs go through in bounded batches."""
        if isinstance(instances, np.ndarray) and not instances.flags.writeable:
            instances = instances.copy()  # torch will not wrap a read-only (Arrow-backed) array
        inputs = torch.as_tensor(instances)
        outputs = [
            torch.softmax(self.network(inputs[start : start + batch_size].to(self.device)), dim=1)
            for start in range(0, len(inputs), batch_size)
        ]
        return torch.cat(outputs).float().cpu().numpy()

    def describe(self, probabilities: np.ndarray) -> list[dict[str, Any]]:
        """The served form of each row: its label and the probability of every class."""
        names = [str(label) for label in self.card.classes]
        best = probabilities.argmax(axis=1)
        return [
            {
                "label": self.card.classes[index],
                "probabilities": dict(zip(names, row.round(6).tolist(), strict=True)),
            }
            for index, row in zip(best, probabilities, strict=True)
        ]
