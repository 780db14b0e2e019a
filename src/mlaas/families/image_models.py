"""The image family's model: a CNN on raw pixels, the preprocessor feeding it, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlaas.core.errors import SettingsError
from mlaas.core.model_card import ModelCard
from mlaas.core.model_settings import CnnSettings
from mlaas.families.base import NetworkRecipe
from mlaas.families.image_files import PIXEL_MAX
from mlaas.families.image_instances import ImageInputs, ImageShape


def random_shift(batch: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels (zero fill): cheap, label-preserving.

    Takes (n, h, w) grey or (n, h, w, c) images and returns the same shape.
    """
    images = batch.unsqueeze(-1) if batch.dim() == 3 else batch
    count, height, width = images.shape[:3]
    padded = nn.functional.pad(images, (0, 0, max_shift, max_shift, max_shift, max_shift))
    device = images.device
    dy = torch.randint(0, 2 * max_shift + 1, (count,), device=device)
    dx = torch.randint(0, 2 * max_shift + 1, (count,), device=device)
    rows = (dy[:, None] + torch.arange(height, device=device))[:, :, None]
    cols = (dx[:, None] + torch.arange(width, device=device))[:, None, :]
    shifted = padded[torch.arange(count, device=device)[:, None, None], rows, cols]
    return shifted.reshape(batch.shape)


class ConvNet(nn.Module):
    """The classic Keras MNIST convnet, sized by settings: convs, max-pool, dense, classes.

    It takes raw pixel values (any dtype, 0..255) shaped (n, h, w) or (n, h, w, c) and
    normalises them itself, so every caller feeds it the same thing a client sends.
    """

    def __init__(self, shape: ImageShape, cfg: CnnSettings, num_classes: int) -> None:
        super().__init__()
        self.shape = shape
        height, width, channels = shape
        layers: list[nn.Module] = []
        in_channels = channels
        for out_channels in cfg.conv_channels:
            layers += [nn.Conv2d(in_channels, out_channels, cfg.kernel_size), nn.ReLU()]
            in_channels = out_channels
        layers += [nn.MaxPool2d(2), nn.Dropout(cfg.dropout), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            try:
                flat = self.features(torch.zeros(1, channels, height, width)).shape[1]
            except RuntimeError:
                raise SettingsError(
                    f"train.model: {len(cfg.conv_channels)} conv layers of kernel "
                    f"{cfg.kernel_size} leave nothing of a {height}x{width} image; "
                    "use fewer layers or a smaller kernel"
                ) from None
        self.head = nn.Sequential(
            nn.Linear(flat, cfg.hidden_units),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden_units, num_classes),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width, channels = self.shape
        images = pixels.reshape(-1, height, width, channels).permute(0, 3, 1, 2)
        return self.head(self.features(images.float() / PIXEL_MAX))


TRANSFORM_BLOCK_ROWS = 8192


class PixelPreprocessor:
    """Images to uint8 tensors: the gate has checked the range, so rounding loses nothing."""

    def fit(self, features: np.ndarray) -> PixelPreprocessor:
        return self

    def transform(self, features: np.ndarray) -> torch.Tensor:
        features = np.asarray(features, dtype=np.float32)
        # Straight into uint8, a block of rows at a time: a float32 copy of the whole data set
        # (4 bytes a pixel, twice over for rint and clip) is never held beside it.
        pixels = np.empty(features.shape, dtype=np.uint8)
        for start in range(0, len(features), TRANSFORM_BLOCK_ROWS):
            block = features[start : start + TRANSFORM_BLOCK_ROWS]
            pixels[start : start + TRANSFORM_BLOCK_ROWS] = np.clip(np.rint(block), 0, PIXEL_MAX)
        return torch.from_numpy(pixels)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "pixels.json").write_text('{"dtype": "uint8", "range": [0, 255]}\n')

    @classmethod
    def load(cls, folder: Path) -> PixelPreprocessor:
        return cls()


def cnn_recipe(card: ModelCard) -> NetworkRecipe:
    """The CNN of an image card: pixels as uint8, shifted when training if the settings say so."""
    cfg = card.model_as(CnnSettings)
    shape = card.inputs_as(ImageInputs).image_shape
    classes = len(card.labels)
    max_shift = cfg.augment_max_shift
    return NetworkRecipe(
        new_preprocessor=PixelPreprocessor,
        load_preprocessor=PixelPreprocessor.load,
        network=lambda _: ConvNet(shape, cfg, classes),
        augment=(lambda batch: random_shift(batch, max_shift)) if max_shift else None,
    )
