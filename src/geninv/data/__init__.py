"""Data sets: MNIST (the embedded 5,000-digit subset, or the standard IDX files)."""

from geninv.data.mnist import (
    IMAGE_SHAPE,
    N_PIXELS,
    embedded_path,
    mnist,
    read_idx,
    save_image_grid,
    to_float,
    to_pixels,
)

__all__ = ["IMAGE_SHAPE", "N_PIXELS", "embedded_path", "mnist", "read_idx", "save_image_grid", "to_float", "to_pixels"]
