"""Image decoding, validation and ViLT resizing (transformers' `ViltImageProcessorPil`).

Images stay as their original encoded bytes (JPEG/PNG) in the arrow files and are decoded per sample. A JPEG
is decoded at a reduced DCT scale when the target is much smaller than the stored image (`Image.draft`, never
below the target size), which makes decoding cheap enough for a DataLoader with 0-2 workers.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image
from pydantic import ValidationError

from mmp_core.config import EMBEDDED_IMAGE, ImageParams

# docs/method.md §1, §6: normalised with mean = std = 0.5, so pixel values lie in [-1, 1].
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
_DEFAULT = ImageParams()


@dataclass(frozen=True)
class ImageConfig:
    """Resize rule (docs/method.md §6): scale the shorter side to `shorter_side`, cap the longer side at `longer_side`,
    round both down to multiples of `patch_size`. ViLT-B/32: 384 / 640 / 32.

    The data layer's hashable form of the params section `image` (`ImageParams`): same fields, defaults and rules.
    """

    shorter_side: int = _DEFAULT.shorter_side
    longer_side: int = _DEFAULT.longer_side
    patch_size: int = _DEFAULT.patch_size

    def __post_init__(self) -> None:
        for name in ("shorter_side", "longer_side", "patch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"ImageConfig.{name} must be an integer, got {value!r}")
        try:
            ImageParams(**asdict(self))
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'sizes'}: {e['msg']}" for e in error.errors())
            raise ValueError(f"ImageConfig: {problems}") from None

    @classmethod
    def from_params(cls, image: ImageParams) -> ImageConfig:
        return cls(**image.model_dump())

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after resizing an image of the given size (transformers' ViLT rule)."""
        from transformers.models.vilt.image_processing_pil_vilt import get_resize_output_image_size

        dummy = np.broadcast_to(np.zeros((1, 1, 1), np.uint8), (3, height, width))  # no allocation
        return get_resize_output_image_size(
            dummy, shorter=self.shorter_side, longer=self.longer_side, size_divisor=self.patch_size
        )

    @property
    def blank_size(self) -> tuple[int, int]:
        """(height, width) of the ones image that stands in for a sample with no image at all."""
        side = self.shorter_side // self.patch_size * self.patch_size
        return side, side

    @property
    def processor(self):
        """The image processor for this config (one per process, built on first use)."""
        if self not in _PROCESSORS:
            _PROCESSORS[self] = make_processor(self)
        return _PROCESSORS[self]


_PROCESSORS: dict[ImageConfig, object] = {}


# The small default for the embedded dataset (raw images are 96-144 px): 6x6 to 6x10 patches of 16 px.
EMBEDDED_IMAGE_CONFIG = ImageConfig.from_params(EMBEDDED_IMAGE)


def make_processor(config: ImageConfig):
    """A `ViltImageProcessorPil` that resizes with `config` (rescale to [0, 1], normalise with 0.5/0.5, no
    padding: the collate function pads a batch). Only the longer-side cap differs from transformers' class,
    which derives it from the shorter side (int(1333 / 800 * shorter), i.e. 639 for 384)."""
    from transformers import ViltImageProcessorPil
    from transformers.image_processing_backends import PilBackend
    from transformers.image_utils import SizeDict

    class _Processor(ViltImageProcessorPil):
        def resize(self, image, size, resample=None, size_divisor=None):
            height, width = config.output_size(image.shape[-2], image.shape[-1])
            return PilBackend.resize(self, image, SizeDict(height=height, width=width), resample=resample)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _Processor(
            size={"shortest_edge": config.shorter_side},
            size_divisor=config.patch_size,
            image_mean=list(IMAGE_MEAN),
            image_std=list(IMAGE_STD),
            do_pad=False,
        )


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) of an encoded image, from its header only."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    return height, width


def check_image(data: bytes) -> tuple[int, int]:
    """Fully decode `data`; return (height, width). Raises ValueError saying what is wrong."""
    if not data:
        raise ValueError("empty image file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # structure and checksums (PNG CRCs, trailing chunks)
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (64, 64))  # JPEG: still reads every byte, decodes at a reduced scale
            image.load()
            width, height = image.size
    except Image.UnidentifiedImageError:
        raise ValueError("corrupt or truncated image (not a recognised image format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"corrupt or truncated image ({type(error).__name__}: {error})") from None
    if width < 1 or height < 1:
        raise ValueError(f"image has no pixels ({width}x{height})")
    return height, width


def decode_rgb(data: bytes, config: ImageConfig) -> Image.Image:
    """Decode to an RGB PIL image, at a reduced JPEG scale when that still covers the resize target."""
    image = Image.open(io.BytesIO(data))
    height, width = config.output_size(image.size[1], image.size[0])
    image.draft("RGB", (width, height))
    return image.convert("RGB")


def load_pixels(data: bytes, config: ImageConfig) -> np.ndarray:
    """Resized, normalised image, float32 (3, H, W), H and W multiples of the patch size."""
    image = decode_rgb(data, config)
    pixels = config.processor(images=image, return_tensors="np")["pixel_values"][0]
    return np.ascontiguousarray(pixels, dtype=np.float32)


def missing_pixels(data: bytes | None, config: ImageConfig) -> np.ndarray:
    """The 'missing image' input (docs/method.md §2): ones in normalised space with the resized image's shape, or a
    square of the shorter side when there is no image at all."""
    if data:
        height, width = config.output_size(*image_size(data))
    else:
        height, width = config.blank_size
    return np.ones((3, height, width), dtype=np.float32)
