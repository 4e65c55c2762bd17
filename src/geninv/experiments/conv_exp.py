"""Convolutional MNIST generators: where layer-wise uniqueness holds, and how every method fares.

Two shipped generators (``geninv.load_conv_generator``), both ``z (20) -> Linear -> (c_1, 7, 7) ->
ConvTranspose2d -> (c_2, 14, 14) -> ConvTranspose2d -> (1, 28, 28)`` with batch-norm and ReLU on the
hidden layers and a PLU output, read with ``Generator.from_torch`` (convolutions as dense
matrices):

- ``conv_expansive`` (c = 4, 3): widths 20 -> 196 -> 588 -> 784, expanding at every layer;
- ``conv_dcgan`` (c = 32, 16): widths 20 -> 1568 -> 3136 -> 784, DCGAN-shaped, the last layer
  contracts (3136 -> 784).

For each: the architecture report (Corollary 1's inequalities per layer on sampled latents: the
layer at which layer-wise uniqueness fails), then clean inversion, random inpainting and block
inpainting of generated digits with every method (:func:`run_image_experiment`: records, CSV,
SNR distributions, image grids, summary per run), and one ``summary.md`` over both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from geninv.experiments.common import say
from geninv.experiments.mnist_exp import ImageConfig, run_image_experiment
from geninv.experiments.records import atomic_write_text
from geninv.model.generator import Generator

__all__ = ["CONV_METHODS", "run_conv", "reproduce_conv"]

CONV_METHODS = ("oracle", "latent_pursuit", "gd", "adam", "hybrid")
_RUNS = (("clean", None), ("inpaint_random", "random"), ("inpaint_block", "block"))


def _architecture(G: Any, trials: int, seed: int) -> dict[str, Any]:
    from geninv.certificates import certify_architecture

    rep = certify_architecture(G, trials=trials, seed=seed, theorem1=False)
    fails = [k for k, v in rep.corollary1.items() if k != "all" and v < 0.5]
    return {"dims": rep.dims, "trials": trials, "corollary1": rep.corollary1,
            "median_cardinality": [float(c["median"]) for c in rep.cardinality],
            "fails_for_most": fails, "text": str(rep)}


def run_conv(
    out_dir: str | Path,
    *,
    quick: bool = False,
    images: int | None = None,
    seed: int = 0,
    methods: Sequence[str] | None = None,
    progress: bool = True,
    generators: Sequence[str | tuple[str, Generator]] = ("conv_expansive", "conv_dcgan"),
    architecture_trials: int | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) the convolutional-generator study into ``out_dir``.

    Parameters
    ----------
    quick : bool
        24 images per run (gd capped at 1000 iterations) and 50 latents for the architecture report;
        otherwise 1000 images and 1000 latents.
    images : int, optional
        Images per run (overrides ``quick``'s).
    methods : sequence of str, optional
        Default :data:`CONV_METHODS`.
    generators : sequence of str or (str, Generator)
        Names of shipped convolutional generators, or (name, generator) pairs.
    architecture_trials : int, optional
        Latents of the architecture report (overrides ``quick``'s).
    command : str, optional
        The command line, written into every summary.

    Returns
    -------
    dict
        ``out``, ``ran`` (trial units run), ``skipped``, ``figures``, ``summary`` (path of
        ``summary.md``) and ``architecture`` (per generator).
    """
    from geninv.weights import load_conv_generator

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    methods = tuple(methods or CONV_METHODS)
    result: dict[str, Any] = {"out": out_dir, "ran": 0, "skipped": [], "figures": [], "architecture": {}}
    lines = ["# Convolutional MNIST generators", ""] + ([f"Command: `{command}`", ""] if command else [])
    for item in generators:
        name, G = (item, load_conv_generator(item, dtype=torch.float64)) if isinstance(item, str) else item
        G = G.to(torch.float64)
        arch = _architecture(G, architecture_trials or (50 if quick else 1000), seed)
        result["architecture"][name] = arch
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / name / "architecture.json",
                          json.dumps({k: v for k, v in arch.items() if k != "text"}, indent=2) + "\n")
        atomic_write_text(out_dir / name / "architecture.txt", arch["text"] + "\n")
        verdict = ("Corollary 1 holds for most latents at every layer" if not arch["fails_for_most"] else
                   "Corollary 1 fails for most latents at: " + ", ".join(arch["fails_for_most"]))
        lines += [f"## {name}: {' -> '.join(map(str, G.dims))}", "", verdict + ".", "", "```", arch["text"], "```", ""]
        say(f"{name}: {verdict}")
        for tag, mask in _RUNS:
            kw: dict[str, Any] = {"methods": methods, "seed": seed, "mask": mask}
            cfg = ImageConfig.quick(**kw) if quick else ImageConfig(**kw)
            if images is not None:
                cfg.images = images
            for m in methods:  # methods beyond the paper's (hybrid) run with their defaults
                cfg.options.setdefault(m, {})
            res = run_image_experiment(cfg, out_dir / name / tag, experiment=f"{name}_{tag}", generator=G,
                                       progress=progress, title=f"{name}, {tag.replace('_', ' ')}: ")
            if command is not None and res.get("summary") is not None:
                from geninv.experiments.report import write_summary

                write_summary(out_dir / name / tag, command)
            result["ran"] += res["ran"]
            result["skipped"] += res["skipped"]
            result["figures"] += res["figures"]
            lines += [f"- {tag}: [{out_dir / name / tag / 'summary.md'}]({name}/{tag}/summary.md)"]
        lines.append("")
    path = out_dir / "summary.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    result["summary"] = path
    return result


def reproduce_conv(*, quick: bool = False, out: str | Path | None = None, trials: int | None = None, seed: int = 0,
                   methods: Sequence[str] | None = None, progress: bool = True) -> int:
    """``geninv reproduce conv``: :func:`run_conv` into ``out`` (default ``results/[quick/]conv``)."""
    import shlex
    import sys

    from geninv.experiments.demo import RESULTS

    out_dir = Path(out) if out is not None else Path(RESULTS) / ("quick" if quick else "") / "conv"
    cmd = shlex.join(["geninv", *sys.argv[1:]])
    res = run_conv(out_dir, quick=quick, images=trials, seed=seed, methods=methods, progress=progress, command=cmd)
    atomic_write_text(out_dir / "command.txt", cmd + "\n")
    print(f"records, figures and summary in {out_dir} ({res['ran']} trial units run)")
    for s in res["skipped"]:
        print(f"  skipped: {s}")
    for f in res["figures"]:
        print(f"  figure: {f}")
    print(f"  summary: {res['summary']}")
    return 0
