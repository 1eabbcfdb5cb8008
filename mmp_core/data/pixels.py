"""Decoded images, resized once per dataset version and image setting, kept as uint8 on disk.

Decoding and resizing a JPEG costs about a millisecond: across the epochs, validations and methods of a pipeline
it is repeated tens of thousands of times for the same images. `PixelCache` decodes a split's images once (a
thread pool; PIL releases the GIL) into a memory-mapped uint8 array of the resized images, padded to the largest,
with each image's height and width. A sample's pixels are then one table lookup, bit for bit what
`images.load_pixels` gives.

The file is keyed by the arrow file's SHA-256 (from the manifest) and the image setting, under
`$MMP_CACHE_DIR/pixels/` (default `~/.cache/mmp`): a new dataset version or another resize rule is another file,
never a stale one.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mmp_core.data.images import ImageConfig, decode_rgb, image_size
from mmp_core.fileio import atomic_write, default_cache_dir

# uint8 -> normalised float32, exactly as the processor computes it: (x / 255 - 0.5) / 0.5 in float32.
NORMALISED = ((np.arange(256, dtype=np.float32) / np.float32(255)) - np.float32(0.5)) / np.float32(0.5)


def resized_uint8(data: bytes, config: ImageConfig) -> np.ndarray:
    """(3, H, W) uint8: the image resized by the processor's own rule, before rescaling and normalising."""
    processor = config.processor
    image = decode_rgb(data, config)
    resized = processor(images=image, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
    return np.asarray(resized).round().astype(np.uint8)


class PixelCache:
    """The resized images of one split: `pixels(row)` -> float32 (3, h, w) normalised, `size(row)` -> (h, w),
    or None for a row without an image."""

    def __init__(self, images: np.ndarray, sizes: np.ndarray):
        self.images, self.sizes = images, sizes

    @classmethod
    def build(cls, reader, config: ImageConfig, checksum: str, cache_dir: Path | None = None, workers: int = 2):
        """The cache of `reader`'s split (an `ArrowSplit` whose file has SHA-256 `checksum`), built first if absent.

        Building reads each image's size from its header, allocates the memory-mapped array, then decodes into it
        a block of rows at a time, so memory stays flat whatever the dataset's size."""
        directory = cache_dir or default_cache_dir() / "pixels"
        key = json.dumps([checksum, config.shorter_side, config.longer_side, config.patch_size])
        stem = directory / hashlib.sha256(key.encode()).hexdigest()[:24]
        images_path, sizes_path = stem.with_suffix(".images.npy"), stem.with_suffix(".sizes.npy")
        if not (images_path.is_file() and sizes_path.is_file()):
            sizes = np.array(
                [
                    config.output_size(*image_size(data)) if data else (0, 0)
                    for data in map(reader.image, range(len(reader)))
                ],
                dtype=np.int32,
            ).reshape(-1, 2)
            shape = (len(sizes), 3, max(1, int(sizes[:, 0].max(initial=0))), max(1, int(sizes[:, 1].max(initial=0))))

            def write_images(tmp: str) -> None:
                images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
                with ThreadPoolExecutor(workers) as pool:
                    for start in range(0, len(sizes), 256):
                        rows = range(start, min(start + 256, len(sizes)))
                        for row, image in zip(
                            rows, pool.map(lambda r: _decode(reader.image(r), config), rows), strict=True
                        ):
                            if image is not None:
                                images[row, :, : image.shape[1], : image.shape[2]] = image
                images.flush()
                del images

            atomic_write(images_path, write_images)
            atomic_write(sizes_path, lambda tmp: _save_npy(tmp, sizes))
        return cls(np.load(images_path, mmap_mode="r"), np.load(sizes_path))

    def __len__(self) -> int:
        return len(self.sizes)

    def size(self, row: int) -> tuple[int, int] | None:
        height, width = (int(v) for v in self.sizes[row])
        return (height, width) if height else None

    def pixels(self, row: int) -> np.ndarray | None:
        size = self.size(row)
        if size is None:
            return None
        return NORMALISED[self.images[row, :, : size[0], : size[1]]]


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would append ".npy" to a temporary name
        np.save(handle, array, allow_pickle=False)


def _decode(data: bytes | None, config: ImageConfig) -> np.ndarray | None:
    return None if data is None else resized_uint8(data, config)
