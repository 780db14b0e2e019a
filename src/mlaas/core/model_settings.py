"""Each model's settings (`train.model`), and their union, told apart by `name`.

A model is a settings class whose `name` is a Literal of its one name; the union below is the
one list of them. The families declare which of these they offer (`mlaas.families.outlines`).
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, Field

from mlaas.core.section import Section


class CnnSettings(Section):
    """Image CNN: convolutions, one max-pool, a dense layer, one output per class."""

    name: Literal["cnn"] = "cnn"
    conv_channels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [32], min_length=1, max_length=6
    )
    kernel_size: int = Field(3, ge=1, le=7)
    hidden_units: int = Field(128, ge=1, le=8192)
    dropout: float = Field(0.25, ge=0.0, lt=1.0)
    augment_max_shift: int = Field(2, ge=0, le=8)
    """Training images are shifted by up to this many pixels (0 turns augmentation off)."""


class MlpSettings(Section):
    """Tabular multi-layer perceptron (Lightning) on the preprocessed features."""

    name: Literal["mlp"] = "mlp"
    hidden_units: list[Annotated[int, Field(ge=1, le=8192)]] = Field(
        default_factory=lambda: [64, 32], min_length=1, max_length=8
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class LogisticRegressionSettings(Section):
    name: Literal["logistic_regression"] = "logistic_regression"
    c: float = Field(1.0, gt=0.0)
    """Inverse regularisation strength (scikit-learn's C)."""
    max_iter: int = Field(2000, ge=10)


class SvmSettings(Section):
    name: Literal["svm"] = "svm"
    c: float = Field(1.0, gt=0.0)
    kernel: Literal["rbf", "linear", "poly", "sigmoid"] = "rbf"


class GradientBoostingSettings(Section):
    """scikit-learn's histogram gradient boosting (classification or regression)."""

    name: Literal["gradient_boosting"] = "gradient_boosting"
    max_iter: int = Field(200, ge=1)
    learning_rate: float = Field(0.05, gt=0.0, le=1.0)
    max_leaf_nodes: int = Field(15, ge=2)
    l2_regularization: float = Field(0.0, ge=0.0)


class RidgeSettings(Section):
    name: Literal["ridge"] = "ridge"
    alpha: float = Field(1.0, ge=0.0)


class TfidfLinearSettings(Section):
    """Text: TF-IDF of hashed words and word n-grams, then a logistic regression."""

    name: Literal["tfidf_linear"] = "tfidf_linear"
    max_ngram: int = Field(2, ge=1, le=5)
    hash_bits: int = Field(18, ge=8, le=24)
    """2**hash_bits feature columns. Hashing keeps no vocabulary, so the saved model is
    small and loads in milliseconds; collisions at 2**18 cost no measurable accuracy here."""
    c: float = Field(4.0, gt=0.0)


class TransformerSettings(Section):
    """Text: a small Transformer encoder (2 layers of 64 by default) trained on the data."""

    name: Literal["transformer"] = "transformer"
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


class MiniLMSettings(Section):
    """Text: frozen pretrained MiniLM sentence embeddings (shipped offline), a trained head."""

    name: Literal["minilm"] = "minilm"
    max_tokens: int = Field(256, ge=8, le=512)
    hidden_units: int = Field(0, ge=0)
    """0: a linear head; more: one hidden layer of this width."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class MatrixFactorizationSettings(Section):
    """Recommendation: biased matrix factorisation, mu + b_user + b_item + <p_user, q_item>."""

    name: Literal["matrix_factorization"] = "matrix_factorization"
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


MODEL_SETTINGS: tuple[type[Section], ...] = get_args(get_args(ModelSettings)[0])
"""Every model's settings class, in the union's order."""


def model_name(settings: type[BaseModel]) -> str:
    """A model's `train.model.name`: the one value its settings class's `name` allows."""
    field = settings.model_fields.get("name")
    names = get_args(field.annotation) if field is not None else ()
    if len(names) != 1 or not isinstance(names[0], str):
        raise TypeError(f"{settings.__name__}.name must be a Literal of one model name")
    return names[0]
