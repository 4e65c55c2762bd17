"""Fig. 8-13 of the paper: inpainting with the trained MNIST generator.

Each generated digit ``y_i = G(z_i)`` is observed through a mask ``M`` and every method
inverts ``M y_i`` (``geninv.invert(..., mask=M)``); the SNRs are measured on the *whole*
image, hidden pixels included, which is what inpainting is judged by.

Masks
-----
``"random"``
    Each image hides ``missing`` (default 45 %) of its pixels, a different random set per
    image. The paper's fraction did not survive in our copy; 45 % keeps the 431 known pixels
    well above the nonzeros of the last hidden layer (about half of 392), the reason the
    paper gives for success (docs/method.md sec. 8).
``"block"``
    The upper ``rows`` = 13 of the 28 rows are hidden (420 known pixels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geninv.exceptions import InputError
from geninv.experiments.common import PAPER_COLORS, PAPER_LABELS, PAPER_MARKERS
from geninv.experiments.mnist_exp import ImageConfig, image_section, image_trial, image_units, run_image_experiment
from geninv.experiments.registry import Experiment, register

__all__ = ["run_inpaint", "inpaint_config"]


def inpaint_config(mask: str = "random", *, quick: bool = False, **kw: Any) -> ImageConfig:
    """The settings of the inpainting run (``quick``: about a minute on 2 cores)."""
    if mask not in ("random", "block"):
        raise InputError(f"mask: expected 'random' or 'block', received {mask!r}")
    return ImageConfig.quick(mask=mask, **kw) if quick else ImageConfig(mask=mask, **kw)


def run_inpaint(config: ImageConfig, out_dir: str | Path, **kw: Any) -> dict[str, Any]:
    """Run (or resume) the inpainting experiment of ``config.mask``; see :func:`run_image_experiment`."""
    if config.mask not in ("random", "block"):
        raise InputError(f"mask: expected 'random' or 'block' for inpainting, received {config.mask!r}")
    what = f"{config.missing:.0%} random pixels hidden" if config.mask == "random" else f"upper {config.rows} rows hidden"
    kw.setdefault("title", f"MNIST inpainting, {what}: ")
    return run_image_experiment(config, out_dir, experiment=f"inpaint_{config.mask}", **kw)


for _mask, _rank, _what in (("random", 2, "{missing:.0%} random pixels missing (Fig. 8-10)"),
                            ("block", 3, "upper {rows} rows missing (Fig. 11-13)")):
    register(Experiment(f"inpaint_{_mask}", f"MNIST inpainting, {_what}", f"inpaint --mask {_mask}", ImageConfig,
                        image_units, image_trial, image_section, PAPER_LABELS, PAPER_COLORS, PAPER_MARKERS, rank=_rank))
