"""``geninv certify`` and ``geninv invert``: uniqueness certificates of a generator's signals, and
the inversion of signals read from a file."""

from __future__ import annotations

import argparse

from geninv.cli.common import add_model, add_runtime, write_json
from geninv.cli.files import open_signals, read_latents, read_mask
from geninv.cli.model_file import load_model


def register_certify(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``geninv certify`` (its flags and its handler) to ``sub``."""
    p = sub.add_parser("certify", help="uniqueness certificate (Theorem 1, Corollary 1, Theorem 2) of a generator's signals")
    src = p.add_mutually_exclusive_group(required=True)
    add_model(p, optional=True, group=src, random_output=True)
    src.add_argument("--random", default=None, metavar="DIMS", help="a random generator instead, e.g. 20,200,600")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of --random's weights, of the latents and of --architecture's latents (default 0)")
    p.add_argument("--n", type=int, default=None, help="number of latents z ~ N(0, I) to certify (default 1; not with --z)")
    p.add_argument("--z", default=None, metavar="PATH", help="latents from a .npy or .safetensors file instead")
    p.add_argument("--noise", type=float, default=0.0, help="||e||_2 bound on the image noise (Theorem 2)")
    p.add_argument("--mask", default=None, metavar="PATH",
                   help="observed-pixel mask (n,) or (B, n), 1 = observed: certify the inpainting problem")
    p.add_argument("--no-s-forms", action="store_true", help="skip the s-spark/s-rank/s-coherence forms")
    p.add_argument("--architecture", type=int, default=0, metavar="TRIALS",
                   help="also report cardinalities and Corollary 1 over TRIALS sampled latents")
    p.add_argument("--json", default=None, metavar="PATH", help="write the report(s) as JSON")
    add_runtime(p, cpu_only=True)

    def run(a: argparse.Namespace) -> int:
        import torch

        from geninv.certificates import certify, certify_architecture
        from geninv.exceptions import InputError
        from geninv.model import random_generator

        if a.z is not None and a.n is not None:
            raise InputError(f"--n: not used with --z (the file gives the latents), received --n {a.n}")
        if a.seed is not None and a.z is not None and a.random is None and not a.architecture:
            raise InputError(f"--seed: not used with --z and a MODEL (it seeds --random's weights, the latents "
                             f"drawn without --z and --architecture's latents), received --seed {a.seed}")
        seed = 0 if a.seed is None else a.seed
        if a.random is not None:
            if a.arch is not None or a.batchnorm:
                raise InputError("--arch: describes a state-dict MODEL, not --random")
            try:
                dims = [int(v) for v in a.random.split(",")]
            except ValueError:
                raise InputError(f"--random: expected comma-separated integers like 20,200,600, received {a.random!r}") from None
            G = random_generator(dims, output=a.output or "tanh", seed=seed, dtype=torch.float64)
        else:
            G = load_model(a)
        if a.z is not None:
            z = read_latents(a.z)
        else:
            n = 1 if a.n is None else a.n
            if n < 1:
                raise InputError(f"--n: expected a positive integer, received {n}")
            z, _ = G.sample(n, seed=seed)
        mask = read_mask(a.mask) if a.mask else None
        certs = certify(G, z, mask=mask, noise=a.noise, s_forms=not a.no_s_forms)
        assert isinstance(certs, list)
        print(certs[0])
        if len(certs) > 1:
            print(f"\n{len(certs)} signals:")
            for k, c in enumerate(certs):
                print(f"  [{k}] {c.summary()}")
            u = [c.unique for c in certs]
            print(f"unique: {u.count(True)} certified, {u.count(False)} not unique, {u.count(None)} undecided")
        out: dict[str, object] = {"generator": a.generator or f"random {a.random} seed {seed}",
                                  "certificates": [c.to_dict() for c in certs]}
        if a.architecture:
            rep = certify_architecture(G, trials=a.architecture, seed=seed)
            print()
            print(rep)
            out["architecture"] = rep.to_dict()
        if a.json:
            write_json(a.json, out)
        return 0

    p.set_defaults(func=run, interrupted="nothing was written",
                   flag_names={"z": "--z", "noise": "--noise", "n": "--n", "trials": "--architecture",
                               "dims": "--random", "G": "MODEL", "mask": "--mask"})


def _parse_noise_level(text: str | None) -> float | str | None:
    import math

    from geninv.exceptions import InputError

    if text is None or text == "auto":
        return text
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or v < 0:
        raise InputError(f"--noise-level: expected a standard deviation >= 0 or 'auto', received {text!r}")
    return v


_INVERT_METHODS = ("auto", "latent_pursuit", "layered_bp", "hybrid", "gd", "adam", "lp_layerwise")
_NOISE_METHODS = ("auto", "latent_pursuit", "layered_bp", "hybrid")
_MAX_ITER_METHODS = ("latent_pursuit", "layered_bp", "gd", "adam")
_MEMORY_BUDGET_MB = 1000.0


def register_invert(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``geninv invert`` (its flags and its handler) to ``sub``."""
    p = sub.add_parser(
        "invert", help="invert signals from a file: z and the fit per signal, written to a file",
        description="Invert the signals of SIGNALS with MODEL in chunks that fit --memory-budget, with a progress "
                    "bar. Each finished chunk is kept in OUT.parts/ at once, so an interrupted run resumes where it "
                    "stopped when rerun with the same arguments; OUT is written when every chunk is done. The solve "
                    "runs in the precision of the signals (float32 for float32 data; --float64 for more).",
    )
    add_model(p, optional=False)
    p.add_argument("signals", metavar="SIGNALS", help="signals y, (B, n) or (n,), in a .npy or .safetensors file")
    p.add_argument("--method", default="auto", choices=_INVERT_METHODS,
                   help="inversion method (default auto: the exact path, refinement and a fallback per signal; the "
                        "oracle needs the true supports, so it is API-only)")
    p.add_argument("--mask", default=None, metavar="PATH", help="observed-pixel mask (n,) or (B, n), 1 = observed")
    p.add_argument("--noise-level", default=None, metavar="SIGMA",
                   help="standard deviation of the noise on the signals, 'auto' to estimate it, or 0 for exact "
                        f"signals (methods {', '.join(_NOISE_METHODS)}; default: decided per signal, the exact path "
                        "where the generator realizes it exactly, the noise level estimated elsewhere)")
    p.add_argument("--float64", action="store_true", help="solve in float64 (default: the signals' precision)")
    p.add_argument("--max-iter", type=int, default=None,
                   help=f"iteration cap of --method {', '.join(_MAX_ITER_METHODS)} (auto and hybrid run several "
                        "stages with their own caps; lp_layerwise solves linear programs)")
    p.add_argument("--chunk-size", type=int, default=None, metavar="N",
                   help="signals per chunk (default: the most that fit --memory-budget)")
    p.add_argument("--memory-budget", type=float, default=None, metavar="MB",
                   help=f"memory one chunk's inversion may take, in MB (default {_MEMORY_BUDGET_MB:g}; not with --chunk-size)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", default="inverted.safetensors", metavar="PATH",
                   help="output file (.safetensors with z, y_hat, converged, residual, fits; or .npy with z only)")
    add_runtime(p)

    def run(a: argparse.Namespace) -> int:
        import shutil
        from pathlib import Path

        import numpy as np
        import torch
        from safetensors.torch import save_file

        import geninv
        from geninv.exceptions import InputError
        from geninv.solvers.chunked import invert_chunked
        from geninv.train.gan import resolve_device

        out = Path(a.out)
        if out.suffix not in (".safetensors", ".npy"):
            raise InputError(f"--out: expected a .safetensors or .npy path, received {a.out!r}")
        noise = _parse_noise_level(a.noise_level)
        if noise is not None and a.method not in _NOISE_METHODS:
            raise InputError(f"--noise-level: expected --method {', '.join(_NOISE_METHODS)} (the noise-aware forms), "
                             f"received --method {a.method}")
        if a.max_iter is not None and a.method not in _MAX_ITER_METHODS:
            raise InputError(f"--max-iter: not used by --method {a.method} (only by {', '.join(_MAX_ITER_METHODS)}); "
                             "leave it out")
        if a.memory_budget is not None and a.chunk_size is not None:
            raise InputError("--memory-budget: not used with --chunk-size (the budget only chooses the chunk size); "
                             "give one of them")
        budget_mb = _MEMORY_BUDGET_MB if a.memory_budget is None else a.memory_budget
        if a.chunk_size is not None and a.chunk_size < 1:
            raise InputError(f"--chunk-size: expected a positive integer, received {a.chunk_size}")
        if not budget_mb > 0:
            raise InputError(f"--memory-budget: expected a positive number of MB, received {a.memory_budget}")
        device = resolve_device(a.device, "--device")
        G = load_model(a)
        y = open_signals(a.signals)
        data_dtype = y.dtype if isinstance(y, torch.Tensor) else torch.from_numpy(np.zeros(0, y.dtype)).dtype
        dtype = torch.float64 if a.float64 or data_dtype == torch.float64 else torch.float32
        mask = read_mask(a.mask) if a.mask else None
        if mask is not None and mask.shape[0] == 1:
            mask = mask[0]
        options: dict[str, object] = {}
        if a.max_iter is not None:
            options["max_iter"] = a.max_iter
        if noise is not None:
            options["noise_level"] = noise
        parts = out.with_name(out.name + ".parts")
        a.interrupted = (f"finished chunks are kept in {parts}; rerun the same command to resume without "
                         "recomputing them")
        res = invert_chunked(G, y, a.method, mask=mask, chunk_size=a.chunk_size,
                             memory_budget=budget_mb * 1e6, dtype=dtype, device=device, checkpoint=parts,
                             progress=not a.no_progress, **options)
        G = G.to(device=device, dtype=dtype)
        B = res.batch_size
        step = res.info["chunk_size"]
        y_hat = torch.empty((B, G.output_dim), dtype=dtype)
        fit = torch.empty(B, dtype=torch.float64)
        with torch.no_grad():
            for lo in range(0, B, step):
                hi = min(B, lo + step)
                yc = torch.from_numpy(np.array(y[lo:hi], copy=True)) if not isinstance(y, torch.Tensor) else y[lo:hi]
                yc = yc.to(device=device, dtype=dtype)
                yh = G(res.z[lo:hi])
                seen = torch.ones_like(yc, dtype=torch.bool) if mask is None else (
                    mask[lo:hi] if mask.ndim == 2 and mask.shape[0] == B else mask).expand_as(yc)
                fit[lo:hi] = geninv.snr(torch.where(seen, yc, 0), torch.where(seen, yh, 0)).double().cpu()
                y_hat[lo:hi] = yh.cpu()
        resumed = res.info["resumed"]
        checked = {} if res.fits is None or res.residual is None else {
            "residual": res.residual.cpu().contiguous(), "fits": res.fits.cpu().contiguous()}
        verdict = "fit y not checked by the method" if not checked else (
            f"{int(checked['fits'].sum())} fit y (relative residual median {float(checked['residual'].median()):.3g}, "
            f"max {float(checked['residual'].max()):.3g})")
        print(f"{a.method} ({str(dtype).replace('torch.', '')}): {B} signals in {res.seconds:.2f} s, "
              f"{int(res.converged.sum())} converged, {verdict}; SNR of the fit on observed pixels: "
              f"median {float(fit.median()):.1f} dB, min {float(fit.min()):.1f} dB"
              + (f"; {resumed} of {res.info['chunks']} chunks read from {parts}" if resumed else ""))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        if out.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, res.z.cpu().numpy())
        else:
            save_file({"z": res.z.cpu().contiguous(), "y_hat": y_hat.contiguous(), "converged": res.converged.cpu(),
                       "fit_snr_db": fit.contiguous(), **checked}, str(tmp), metadata={"method": a.method})
        tmp.replace(out)
        shutil.rmtree(parts, ignore_errors=True)
        print(f"wrote {out}")
        return 0

    p.set_defaults(func=run, interrupted="nothing was written",
                   flag_names={"y": "SIGNALS", "mask": "--mask", "max_iter": "--max-iter", "noise_level": "--noise-level",
                               "chunk_size": "--chunk-size", "memory_budget": "--memory-budget", "G": "MODEL",
                               "method": "--method", "measure": "--mask"})

