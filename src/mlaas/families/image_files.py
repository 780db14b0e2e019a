"""Image files as pixel arrays: one decoder for a folder's training images and served ones.

An image file read from `load.path` and an encoded image a client sends (`{"b64": ...}`) go
through the same steps: opened only as one of IMAGE_FORMATS, refused past a pixel count (a
decompression bomb), converted to one colour mode and resized to one size, bilinearly.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from mlaas.core.errors import DataError, SettingsError

if TYPE_CHECKING:
    from PIL import Image

ColorMode = Literal["grey", "rgb"]
PIL_MODES: dict[ColorMode, str] = {"grey": "L", "rgb": "RGB"}
CHANNELS: dict[ColorMode, int] = {"grey": 1, "rgb": 3}
PIXEL_MAX = 255.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
"""What Pillow may open: the common formats, never one of its rarer decoders."""
MAX_ENCODED_IMAGE_BYTES = 4 * 1024 * 1024
"""A served image's file size: a large phone photo fits; the body limit caps a batch anyway."""
MAX_SERVED_IMAGE_PIXELS = 4096 * 4096
"""A served image's decoded size: 48 MB as RGB. A few kB of PNG can claim far more."""


class UnreadableImage(ValueError):
    """Bytes or a file that are not an image of IMAGE_FORMATS within the pixel limit."""


@dataclass(frozen=True)
class FolderImages:
    """A folder's images, all in one colour mode and size; None where a file did not read."""

    pixels: list[np.ndarray | None]
    """float32 (height, width, channels) in 0..255."""
    labels: list[str]
    source_sizes: list[tuple[int, int]]
    """Each file's (height, width) on disk; (0, 0) for one that did not read."""
    color_mode: ColorMode
    size: tuple[int, int]


def open_image(source: Path | bytes, max_pixels: int) -> Image.Image:
    """An image file or encoded image, opened (its header read, its pixels not yet decoded);
    UnreadableImage for anything that is not one of IMAGE_FORMATS or has too many pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(
            io.BytesIO(source) if isinstance(source, bytes) else source, formats=IMAGE_FORMATS
        )
    except Image.DecompressionBombError:  # past twice Pillow's limit, refused while opening
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise too_many_pixels(f"has over {limit} pixels", max_pixels) from None
    except UnidentifiedImageError:
        raise UnreadableImage(f"not an image: mlaas reads {', '.join(IMAGE_FORMATS)}") from None
    except (OSError, ValueError, SyntaxError) as error:  # Pillow's words for a broken header
        raise UnreadableImage(f"a broken image ({error})") from None
    if image.width * image.height > max_pixels:
        image.close()
        raise too_many_pixels(f"is {image.width}x{image.height} pixels", max_pixels)
    return image


def too_many_pixels(size: str, max_pixels: int) -> UnreadableImage:
    return UnreadableImage(
        f"the image {size}, more than the {max_pixels} allowed (a decompression-bomb limit): "
        "send a smaller image"
    )


def color_mode_of(image: Image.Image) -> ColorMode:
    """Grey for Pillow's one-band modes (1, L, I, F, with or without alpha), else RGB."""
    from PIL import ImageMode

    return "grey" if ImageMode.getmode(image.mode).basemode == "L" else "rgb"


def majority_color_mode(modes: Sequence[ColorMode]) -> ColorMode:
    """What most images are; a tie is RGB, which keeps the colour of the colour images."""
    counts = Counter(modes)
    return "grey" if counts["grey"] > counts["rgb"] else "rgb"


def decode_image(
    source: Path | bytes, mode: ColorMode, size: tuple[int, int], max_pixels: int
) -> np.ndarray:
    """An image file as `pixels_of` makes it."""
    with open_image(source, max_pixels) as image:
        return pixels_of(image, mode, size)


def pixels_of(image: Image.Image, mode: ColorMode, size: tuple[int, int]) -> np.ndarray:
    """An opened image as float32 (height, width, channels) in 0..255: converted to `mode`,
    then resized to `size` ([height, width]) bilinearly. What a training image becomes, and so
    what a served one must."""
    from PIL import Image

    height, width = size
    try:
        converted = image.convert(PIL_MODES[mode])  # decodes the pixels
        if converted.size != (width, height):  # PIL sizes are (width, height)
            converted = converted.resize((width, height), Image.Resampling.BILINEAR)
    except Exception as error:  # the header read, the pixels did not
        # Pillow's decoders fail on malformed bytes in many ways (OSError, ValueError,
        # EOFError, struct.error): each is the file's fault, never a server error.
        raise UnreadableImage(f"a broken or truncated image ({error})") from None
    return np.asarray(converted, dtype=np.float32).reshape(height, width, CHANNELS[mode])


def decode_base64_image(text: str, mode: ColorMode, size: tuple[int, int]) -> np.ndarray:
    """A served `{"b64": ...}` image as `decode_image` makes it, within the serving limits."""
    if text.startswith("data:"):
        raise UnreadableImage("send the base64 text alone, without the `data:...;base64,` prefix")
    # Line breaks are allowed: `base64 FILE` wraps its output at 76 characters.
    compact = "".join(text.split())
    if len(compact) > 4 * (-(-MAX_ENCODED_IMAGE_BYTES // 3)):  # cheap: before decoding
        raise too_large(len(compact) * 3 // 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except binascii.Error:
        raise UnreadableImage(
            "not base64: encode the image file's bytes in standard base64 (A-Z a-z 0-9 + /, "
            "padded with =)"
        ) from None
    if len(data) > MAX_ENCODED_IMAGE_BYTES:
        raise too_large(len(data))
    return decode_image(data, mode, size, MAX_SERVED_IMAGE_PIXELS)


def too_large(size: int) -> UnreadableImage:
    return UnreadableImage(
        f"the image file is {size} bytes, more than the {MAX_ENCODED_IMAGE_BYTES} allowed: "
        "send a smaller image (it is resized to the model's size anyway)"
    )


def list_image_folder(folder: Path) -> list[tuple[Path, str]]:
    """Every image file of a `class_name/*.png` folder with its class, in sort order.

    Links are followed only while they stay inside `folder`."""
    if not folder.is_dir():
        raise SettingsError(f"load.path: {folder} is not a folder of class_name/ sub-folders")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    files = [
        (path, class_dir.name)
        for class_dir in class_dirs
        for path in sorted(class_dir.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    for path in [*class_dirs, *(path for path, _ in files)]:
        refuse_link_outside(path, folder)
    if not files:
        raise SettingsError(
            f"load.path: no images ({', '.join(IMAGE_SUFFIXES)}) in class folders under {folder}"
        )
    return files


def read_image_folder(
    folder: Path, size: list[int] | None, color_mode: ColorMode | Literal["auto"]
) -> FolderImages:
    """A folder's images, each converted to `color_mode` ("auto": what most of them are) and
    resized to `size` ([height, width], default: the first readable image's).

    An unreadable file stays as None, so the gate reports it instead of the loader hiding it.
    """
    from PIL import Image

    files = list_image_folder(folder)
    # Pillow's own decompression-bomb limit, as an error: the file becomes a missing image.
    max_pixels = Image.MAX_IMAGE_PIXELS or np.iinfo(np.int64).max
    target = (size[0], size[1]) if size else None
    pixels: list[np.ndarray | None] = []
    own_modes: list[ColorMode | None] = []
    source_sizes: list[tuple[int, int]] = []
    for path, _ in files:
        try:
            with open_image(path, max_pixels) as image:
                own_mode = color_mode_of(image)
                target = target or (image.height, image.width)
                read_as = own_mode if color_mode == "auto" else color_mode
                pixels.append(pixels_of(image, read_as, target))
                own_modes.append(own_mode)
                source_sizes.append((image.height, image.width))
        except UnreadableImage:
            pixels.append(None)
            own_modes.append(None)
            source_sizes.append((0, 0))
    if target is None:
        raise DataError(f"load.path: none of the {len(files)} image files under {folder} reads")
    if color_mode != "auto":
        return FolderImages(pixels, [label for _, label in files], source_sizes, color_mode, target)
    mode = majority_color_mode([own for own in own_modes if own is not None])
    for index, ((path, _), read_in) in enumerate(zip(files, own_modes, strict=True)):
        if read_in is not None and read_in != mode:
            # Read again, in the mode the majority decided: converted from the file, then
            # resized, as a served image is (not converted from the resized pixels).
            try:
                pixels[index] = decode_image(path, mode, target, max_pixels)
            except UnreadableImage:  # changed since it was read a moment ago
                pixels[index], source_sizes[index] = None, (0, 0)
    return FolderImages(pixels, [label for _, label in files], source_sizes, mode, target)


def refuse_link_outside(path: Path, folder: Path) -> None:
    """A data folder may not make the pipeline read outside it: a class folder or image that
    is a link to somewhere else is refused (not skipped: the data set would silently shrink)."""
    target = path.resolve()
    if not target.is_relative_to(folder.resolve()):
        raise DataError(
            f"load.path: {path} links to {target}, outside the data folder {folder}; "
            "mlaas reads only what is inside the folder you named: copy the file in instead"
        )
