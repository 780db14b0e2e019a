"""One served image instance: an array of pixel values, or an encoded image file.

    [[0, 12, ...], ...]            rows of values 0..255 (grey), or rows of [r, g, b] (RGB)
    {"b64": "<base64 PNG/JPEG>"}   the TF Serving / KServe convention; decoded, converted and
                                   resized exactly as the training images were

An instance of the wrong shape is refused with one message saying the shape the model takes,
not one error per misplaced pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from mlaas.core.model_card import CardInputs
from mlaas.families.image_files import (
    IMAGE_FORMATS,
    MAX_ENCODED_IMAGE_BYTES,
    PIXEL_MAX,
    ColorMode,
    UnreadableImage,
    decode_base64_image,
)

ENCODED_FORM = '{"b64": "<base64 image file>"}'

ImageShape = tuple[int, int, int]
"""(height, width, channels)."""


class ImageInputs(CardInputs):
    """A card's `inputs`: the shape of one served image."""

    shape: list[int] = Field(min_length=2, max_length=3)
    """[height, width] for grey images, [height, width, channels] for colour ones."""

    @property
    def image_shape(self) -> ImageShape:
        height, width, *channels = self.shape
        return height, width, channels[0] if channels else 1


class EncodedImage(BaseModel):
    """An image file's bytes in base64: `{"b64": "..."}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    b64: str = Field(
        strict=True,
        description=f"the file ({', '.join(IMAGE_FORMATS)}) in standard base64, at most "
        f"{MAX_ENCODED_IMAGE_BYTES} bytes before encoding; converted to the model's colour mode "
        "and resized to its size like the training images",
        json_schema_extra={
            "contentEncoding": "base64",
            "maxLength": 4 * -(-MAX_ENCODED_IMAGE_BYTES // 3),
        },
    )


@dataclass(frozen=True)
class ServedImage:
    """The image a model takes: its size and colour mode."""

    height: int
    width: int
    color_mode: ColorMode

    @classmethod
    def of_shape(cls, shape: list[int]) -> ServedImage:
        """From a model card's input shape: [height, width] grey, [height, width, 3] RGB."""
        height, width, *channels = shape
        return cls(height, width, "rgb" if channels == [3] else "grey")

    @property
    def shape(self) -> tuple[int, ...]:
        """The pixel array's shape, as clients send it (grey images have no channel axis)."""
        if self.color_mode == "grey":
            return (self.height, self.width)
        return (self.height, self.width, 3)

    def described(self) -> str:
        pixels = "values 0-255" if self.color_mode == "grey" else "[red, green, blue] of 0-255"
        kind = "grey" if self.color_mode == "grey" else "RGB"
        rows = f"{self.height} rows of {self.width} {pixels}"
        article = "an" if str(self.height).startswith("8") or self.height in (11, 18) else "a"
        return f"{article} {self.height}x{self.width} {kind} image ({rows})"


def pixel_array_type(shape: tuple[int, ...]) -> Any:
    """Nested lists of exactly `shape`, of numbers in 0..255."""
    # strict: a string where a number goes is an error, not silently converted.
    array: Any = Annotated[float, Field(strict=True, ge=0, le=PIXEL_MAX, allow_inf_nan=False)]
    for size in reversed(shape):
        array = Annotated[list[array], Field(min_length=size, max_length=size)]
    return array


class InstanceReader:
    """Validates one served instance into pixels: arrays as pydantic checks them, encoded
    images through the loader's own decoder."""

    def __init__(self, image: ServedImage) -> None:
        self.image = image
        self.pixels = TypeAdapter(pixel_array_type(image.shape))
        self.encoded = TypeAdapter(EncodedImage)

    def json_schema(self) -> dict[str, Any]:
        """Either form, as the OpenAPI page shows it."""
        array = {**self.pixels.json_schema(), "description": self.image.described()}
        return {"anyOf": [array, EncodedImage.model_json_schema()]}

    def read(self, value: Any) -> Any:
        if isinstance(value, dict):
            return self.decoded(value)
        try:
            return self.pixels.validate_python(value)
        except ValidationError as error:
            raise self.explained(value, error) from None

    def decoded(self, value: dict[str, Any]) -> np.ndarray:
        text = self.encoded.validate_python(value).b64
        image = self.image
        try:
            pixels = decode_base64_image(text, image.color_mode, (image.height, image.width))
        except UnreadableImage as error:
            shown = text if len(text) <= 40 else f"{text[:40]}..."
            raise ValidationError.from_exception_data(
                "instance", [custom_error(("b64",), "image_file", str(error), shown)]
            ) from None
        return pixels.reshape(image.shape)

    def explained(self, value: Any, error: ValidationError) -> ValidationError:
        """The pixel errors, led by the shape the model takes when the value has another one;
        errors that only restate the wrong shape, one per row or pixel, are dropped."""
        details = [
            as_init_details(item)
            for item in error.errors()
            if item["type"] != "list_type" and not isinstance(item["input"], list)
        ]
        if array_shape(value) != self.image.shape:
            message = (
                f"each instance must be {self.image.described()} or {ENCODED_FORM}; "
                f"got {described(value)}"
            )
            details.insert(0, custom_error((), "image_shape", message, described(value)))
        return ValidationError.from_exception_data("instance", details) if details else error


def as_init_details(item: Any) -> InitErrorDetails:
    """One of pydantic's reported errors, ready to be raised again."""
    if item["type"] == "float_type" and type(item["input"]) is int:
        # JSON may spell out an integer past float range (1 and 400 zeros): it is no finite
        # number, and says so, as it does when the body is validated as JSON.
        return {"type": "finite_number", "loc": item["loc"], "input": item["input"]}
    details: InitErrorDetails = {"type": item["type"], "loc": item["loc"], "input": item["input"]}
    if "ctx" in item:
        details["ctx"] = item["ctx"]
    return details


def custom_error(
    loc: tuple[str | int, ...], kind: str, message: str, shown: Any
) -> InitErrorDetails:
    # The message goes in as context: braces in it ({"b64": ...}) are not a template.
    return {
        "type": PydanticCustomError(kind, "{message}", {"message": message}),
        "loc": loc,
        "input": shown,
    }


def array_shape(value: Any) -> tuple[int, ...] | None:
    """The shape of nested lists (() for a number); None when rows differ in length or depth."""
    if not isinstance(value, list):
        return ()
    shapes = {array_shape(item) for item in value}
    if len(shapes) > 1:
        return None
    inner = shapes.pop() if shapes else ()
    return None if inner is None else (len(value), *inner)


def described(value: Any) -> str:
    """A value's shape or JSON type, as a client would name it."""
    if isinstance(value, list):
        shape = array_shape(value)
        if shape is None:
            return "rows of different lengths"
        return "an empty list" if 0 in shape else "x".join(map(str, shape))
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "a string" if isinstance(value, str) else "a number"


def image_instance_type(shape: list[int]) -> Any:
    """The pydantic type of one served instance of a model taking `shape`."""
    reader = InstanceReader(ServedImage.of_shape(shape))
    return Annotated[Any, PlainValidator(reader.read), WithJsonSchema(reader.json_schema())]
