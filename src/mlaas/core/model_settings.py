"""Each model's settings (`train.model`), and their union, told apart by `name`.

A model is a settings class whose `name` is a Literal of its one name; the union below is the
one list of them. The families declare which of these they offer (`mlaas.families.outlines`).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, get_args

from pydantic import BaseModel, Field

from mlaas.core.search_space import Choice, Dimension, Range
from mlaas.core.section import Section

LEARNING_RATES = Range(low=1e-4, high=1e-2, log=True)
DROPOUTS = Range(low=0.0, high=0.5)


class ModelSection(Section):
    """A model's settings, with what a search varies when `tune.search_space` is empty."""

    default_search_space: ClassVar[dict[str, Dimension]] = {}
    trained_by_lightning: ClassVar[bool] = False
    """A network: the `train` section's epochs, batches and learning rate apply to it."""


class NetworkSection(ModelSection):
    trained_by_lightning: ClassVar[bool] = True


class CnnSettings(NetworkSection):
    """Image CNN: convolutions, one max-pool, a dense layer, one output per class."""

    name: Literal["cnn"] = "cnn"
    default_search_space: ClassVar[dict[str, Dimension]] = {
        "learning_rate": LEARNING_RATES,
        "hidden_units": Range(low=32, high=256, log=True),
        "dropout": DROPOUTS,
    }
    conv_channels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [32], min_length=1, max_length=6
    )
    kernel_size: int = Field(3, ge=1, le=7)
    hidden_units: int = Field(128, ge=1, le=8192)
    dropout: float = Field(0.25, ge=0.0, lt=1.0)
    augment_max_shift: int = Field(2, ge=0, le=8)
    """Training images are shifted by up to this many pixels (0 turns augmentation off)."""


class MlpSettings(NetworkSection):
    """Tabular multi-layer perceptron (Lightning) on the preprocessed features."""

    name: Literal["mlp"] = "mlp"
    default_search_space: ClassVar[dict[str, Dimension]] = {
        "learning_rate": LEARNING_RATES,
        "hidden_units": Choice(choices=[[32], [64, 32], [128, 64]]),
        "dropout": DROPOUTS,
    }
    hidden_units: list[Annotated[int, Field(ge=1, le=8192)]] = Field(
        default_factory=lambda: [64, 32], min_length=1, max_length=8
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class LogisticRegressionSettings(ModelSection):
    name: Literal["logistic_regression"] = "logistic_regression"
    default_search_space: ClassVar[dict[str, Dimension]] = {
        "c": Range(low=1e-3, high=1e2, log=True)
    }
    c: float = Field(1.0, gt=0.0)
    """Inverse regularisation strength (scikit-learn's C)."""
    max_iter: int = Field(2000, ge=10)


class SvmSettings(ModelSection):
    name: Literal["svm"] = "svm"
    default_search_space: ClassVar[dict[str, Dimension]] = {
        "c": Range(low=1e-2, high=1e2, log=True),
        "kernel": Choice(choices=["rbf", "linear"]),
    }
    c: float = Field(1.0, gt=0.0)
    kernel: Literal["rbf", "linear", "poly", "sigmoid"] = "rbf"


class GradientBoostingSettings(ModelSection):
    """scikit-learn's histogram gradient boosting (classification or regression)."""

    name: Literal["gradient_boosting"] = "gradient_boosting"
    default_search_space: ClassVar[dict[str, Dimension]] = {
        "learning_rate": Range(low=0.01, high=0.3, log=True),
        "max_leaf_nodes": Range(low=4, high=64, log=True),
        "l2_regularization": Range(low=0.0, high=1.0),
    }
    max_iter: int = Field(200, ge=1)
    learning_rate: float = Field(0.05, gt=0.0, le=1.0)
    max_leaf_nodes: int = Field(15, ge=2)
    l2_regularization: float = Field(0.0, ge=0.0)


class RidgeSettings(ModelSection):
    name: Literal["ridge"] = "ridge"
    default_search_space: ClassVar[dict[str, Dimension]] = {
        "alpha": Range(low=1e-3, high=1e2, log=True)
    }
    alpha: float = Field(1.0, ge=0.0)


class TfidfLinearSettings(ModelSection):
    """Text: TF-IDF of hashed words and word n-grams, then a logistic regression."""

    name: Literal["tfidf_linear"] = "tfidf_linear"
    default_search_space: ClassVar[dict[str, Dimension]] = {
        "c": Range(low=0.1, high=100.0, log=True),
        "max_ngram": Range(low=1, high=3),
    }
    max_ngram: int = Field(2, ge=1, le=5)
    hash_bits: int = Field(18, ge=8, le=24)
    """2**hash_bits feature columns. Hashing keeps no vocabulary, so the saved model is
    small and loads in milliseconds; collisions at 2**18 cost no measurable accuracy here."""
    c: float = Field(4.0, gt=0.0)


class TransformerSettings(NetworkSection):
    """Text: a small Transformer encoder (2 layers of 64 by default) trained on the data."""

    name: Literal["transformer"] = "transformer"
    default_search_space: ClassVar[dict[str, Dimension]] = {
        "learning_rate": LEARNING_RATES,
        "embedding_dim": Choice(choices=[32, 64, 128]),
        "dropout": DROPOUTS,
    }
    pretrained_embeddings: bool = True
    """Read tokens with MiniLM's word pieces and start from its frozen token embeddings
    (shipped offline), projected to `embedding_dim`; false learns a word vocabulary and its
    embeddings from scratch (weaker on small data sets: 0.70 against 0.7x on Rotten Tomatoes)."""
    vocabulary_size: int = Field(20_000, ge=100)
    """Words kept when learning a vocabulary from scratch."""
    max_tokens: int = Field(256, ge=8, le=4096)
    embedding_dim: int = Field(64, ge=8)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1, le=12)
    feedforward_dim: int = Field(128, ge=8)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class MiniLMSettings(NetworkSection):
    """Text: frozen pretrained MiniLM sentence embeddings (shipped offline), a trained head."""

    name: Literal["minilm"] = "minilm"
    default_search_space: ClassVar[dict[str, Dimension]] = {
        "learning_rate": LEARNING_RATES,
        "hidden_units": Choice(choices=[0, 64, 256]),
        "dropout": DROPOUTS,
    }
    max_tokens: int = Field(256, ge=8, le=512)
    hidden_units: int = Field(0, ge=0)
    """0: a linear head; more: one hidden layer of this width."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class MatrixFactorizationSettings(NetworkSection):
    """Recommendation: biased matrix factorisation, mu + b_user + b_item + <p_user, q_item>."""

    name: Literal["matrix_factorization"] = "matrix_factorization"
    default_search_space: ClassVar[dict[str, Dimension]] = {
        "learning_rate": LEARNING_RATES,
        "factors": Range(low=8, high=128, log=True),
        "regularization": Range(low=1e-3, high=0.2, log=True),
    }
    factors: int = Field(50, ge=1, le=1024)
    regularization: float = Field(0.05, ge=0.0)
    """L2 penalty on the factors and biases of each rating's user and item."""
    relevant_rating: float = 4.0
    """Top-k metrics count a held-out item as relevant from this rating up."""


ModelSettings = Annotated[
    CnnSettings
    | MlpSettings
    | LogisticRegressionSettings
    | SvmSettings
    | GradientBoostingSettings
    | RidgeSettings
    | TfidfLinearSettings
    | TransformerSettings
    | MiniLMSettings
    | MatrixFactorizationSettings,
    Field(discriminator="name"),
]


MODEL_SETTINGS: tuple[type[ModelSection], ...] = get_args(get_args(ModelSettings)[0])
"""Every model's settings class, in the union's order."""


def model_name(settings: type[BaseModel]) -> str:
    """A model's `train.model.name`: the one value its settings class's `name` allows."""
    field = settings.model_fields.get("name")
    names = get_args(field.annotation) if field is not None else ()
    if len(names) != 1 or not isinstance(names[0], str):
        raise TypeError(f"{settings.__name__}.name must be a Literal of one model name")
    return names[0]
