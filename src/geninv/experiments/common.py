"""What the reproductions share: which inversion methods exist and running one of them, the one run
path of every experiment (:func:`execute`: record store, executor, CSV), the generators and signals
of the experiments on generated images (the MNIST generator or its random stand-in, 8-bit and noisy
images), and the paper's method labels and colours.

The reproductions call the public API only (``geninv.invert``, ``geninv.certify``,
``geninv.load_mnist_generator``). A method that the installed library does not provide is
*unavailable*: it is reported with the reason and no record is written for it, so a later
run in which it works fills it in. Nothing is ever made up in its place.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import geninv
from geninv.exceptions import GenInvError, InputError
from geninv.experiments.records import RecordStore, Unit, derive_seed, run_units
from geninv.metrics import snr
from geninv.solvers.registry import REGISTRY

__all__ = [
    "MethodStatus", "method_status", "certify_status", "mnist_status", "solve", "layer_snrs", "say",
    "PAPER_METHODS", "PAPER_LABELS", "PAPER_COLORS", "PAPER_MARKERS", "solver_of", "generator_fingerprint", "latents",
    "worker_cached", "GeneratorSource", "Job", "available_methods", "check_dtype", "execute", "save_figure",
    "STAND_IN_DIMS", "load_generator_for", "noise_generator", "generator_phrase", "quantize_8bit", "noisy_images",
    "signal_identity", "check_signal_config", "resolve_generator", "attempt",
]

#: Methods of the paper's Fig. 4, in plotting order. A name ``"solver:variant"`` runs ``solver``
#: with the options stored under that name (``":nodebias"``: the layer-wise estimate alone,
#: before the end-to-end debiasing fit, which shows what the layer-by-layer inversion achieves).
PAPER_METHODS = ("oracle", "layered_bp", "latent_pursuit", "gd", "lp_layerwise",
                 "layered_bp:nodebias", "latent_pursuit:nodebias")
#: Display names and colours of the paper's methods (and ours) in the reproductions' figures.
PAPER_LABELS = {"oracle": "Oracle", "layered_bp": "Layered BP", "latent_pursuit": "Latent-Pursuit",
                "gd": "Gradient descent", "adam": "Adam (restarts)", "lp_layerwise": "Layer-wise LP (Lei et al.)",
                "layered_bp:nodebias": "Layered BP, no debiasing",
                "latent_pursuit:nodebias": "Latent-Pursuit, no debiasing", "hybrid": "Hybrid"}
PAPER_COLORS = {"oracle": "#555555", "layered_bp": "#1f77b4", "latent_pursuit": "#d62728", "gd": "#2ca02c",
                "adam": "#9467bd", "lp_layerwise": "#ff7f0e", "layered_bp:nodebias": "#17becf",
                "latent_pursuit:nodebias": "#e377c2", "hybrid": "#8c564b"}
PAPER_MARKERS = {"oracle": "x", "layered_bp": "s", "latent_pursuit": "o", "gd": "^", "adam": "D", "lp_layerwise": "v",
                 "layered_bp:nodebias": "s", "latent_pursuit:nodebias": "o", "hybrid": "P"}
#: The random stand-in for the MNIST generator (its architecture, Gaussian weights, biases, PLU output).
STAND_IN_DIMS = (20, 128, 392, 784)


def solver_of(name: str) -> str:
    """The ``geninv.invert`` method behind a method name (``"latent_pursuit:nodebias"`` -> ``"latent_pursuit"``)."""
    return name.split(":", 1)[0]


def say(msg: str) -> None:
    """Messages of a reproduction (kept apart from the progress bar, on stderr)."""
    import sys

    from tqdm.auto import tqdm

    tqdm.write(msg, file=sys.stderr)


@dataclass(frozen=True)
class MethodStatus:
    name: str
    available: bool
    reason: str = ""


_STATUS_CACHE: dict[str, MethodStatus] = {}


def method_status(name: str) -> MethodStatus:
    """Whether ``geninv.invert(..., method=name)`` works, checked once on a tiny generator."""
    if name != solver_of(name):
        base = method_status(solver_of(name))
        return MethodStatus(name, base.available, base.reason)
    if name in _STATUS_CACHE:
        return _STATUS_CACHE[name]
    invert = getattr(geninv, "invert", None)
    if invert is None:
        st = MethodStatus(name, False, "geninv.invert is not available (src/geninv/solvers)")
    else:
        G = geninv.random_generator([3, 12, 30], output="tanh", seed=0, dtype=torch.float64)
        z = torch.randn(1, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        y = G(z)
        kw: dict[str, Any] = {}
        if name == "oracle":
            kw["supports"] = G.trace(z).supports
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                invert(G, y, method=name, **kw)
            st = MethodStatus(name, True)
        except Exception as e:  # noqa: BLE001 - any failure means we cannot use it
            st = MethodStatus(name, False, f"geninv.invert(method={name!r}) failed on a 3-12-30 probe: "
                                           f"{type(e).__name__}: {e}")
    _STATUS_CACHE[name] = st
    return st


def certify_status() -> MethodStatus:
    if getattr(geninv, "certify", None) is None:
        return MethodStatus("certify", False, "geninv.certify is not available (src/geninv/certificates)")
    return MethodStatus("certify", True)


def mnist_status() -> MethodStatus:
    """Whether the shipped MNIST generator can be loaded."""
    load = getattr(geninv, "load_mnist_generator", None)
    if load is None:
        return MethodStatus("mnist", False, "geninv.load_mnist_generator is not available (src/geninv/weights)")
    try:
        load()
    except Exception as e:  # noqa: BLE001
        return MethodStatus("mnist", False, f"geninv.load_mnist_generator() failed: {type(e).__name__}: {e}")
    return MethodStatus("mnist", True)


def solve(G: geninv.Generator, y: Tensor, method: str, *, mask: Tensor | None = None,
          supports: list[Tensor] | None = None, options: dict[str, Any] | None = None) -> tuple[Any, float]:
    """Run one method; returns ``(SolveResult, seconds)`` (wall time measured here too)."""
    kw = dict(options or {})
    if solver_of(method) == "oracle":
        kw["supports"] = supports
    spec = REGISTRY.get(solver_of(method))
    if spec is not None and spec.noise_default == "per_sample":
        kw.setdefault("noise_level", 0)  # the paper's algorithm: the pursuit's exact form on noiseless signals
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # Non-convergence is recorded per trial (``converged``), not printed per trial.
        warnings.simplefilter("ignore", category=geninv.ConvergenceWarning)
        res = geninv.invert(G, y, method=solver_of(method), mask=mask, **kw)  # type: ignore[attr-defined]
    return res, time.perf_counter() - t0


def layer_snrs(G: geninv.Generator, z: Tensor, hidden: Sequence[Tensor], y: Tensor, res: Any) -> list[dict[str, float]]:
    """Per-sample SNR (dB) of ``z``, each hidden layer and the image, as a list of dicts.

    Parameters
    ----------
    z : Tensor of shape (B, n_0)
        The true latents; ``hidden`` their true layers ``[x_1..x_L]``, ``y`` (B, n) the full
        true images (also the hidden pixels when a mask was used).
    res : SolveResult

    Notes
    -----
    The hidden layers are the method's own estimates (``res.layers``, e.g. Latent-Pursuit's
    debiased layers); the image is the re-synthesis ``G(z_hat)``, the signal a user gets back.
    """
    names = ["z"] + [f"x{i + 1}" for i in range(G.n_hidden)] + ["y"]
    z_hat = res.z.detach().to(z.dtype)
    cols = [snr(z, z_hat)]
    regen = None
    for i, x in enumerate(hidden):
        if i < len(res.layers):
            est = res.layers[i].detach().to(x.dtype)
        else:
            regen = regen if regen is not None else G.trace(z_hat).hidden
            est = regen[i]
        cols.append(snr(x, est))
    with torch.no_grad():
        y_hat = G(z_hat.to(G.dtype))
    cols.append(snr(y, y_hat))
    return [{n: float(c[b]) for n, c in zip(names, cols)} for b in range(z.shape[0])]


def as_list(x: Tensor) -> list[Any]:
    return x.detach().cpu().tolist()


def check_methods(methods: Sequence[str]) -> tuple[list[str], list[MethodStatus]]:
    """Split ``methods`` into the available ones and the statuses of the rest (and say so)."""
    ok: list[str] = []
    missing: list[MethodStatus] = []
    for m in methods:
        st = method_status(m)
        if st.available:
            ok.append(m)
        else:
            missing.append(st)
            say(f"skipping method {st.name!r}: {st.reason}")
    return ok, missing


def generator_fingerprint(G: geninv.Generator) -> str:
    """A short hash of the weights, so records of two different generators never mix (a
    matrix-free layer by its operator's image of two seeded random inputs)."""
    h = hashlib.sha256()
    for layer in G.layers:
        if layer.W is None:
            probe = torch.randn(2, layer.n_in, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            h.update(layer.operator.forward(probe).cpu().numpy().tobytes())
        else:
            h.update(layer.W.detach().double().cpu().numpy().tobytes())
        h.update(layer.b.detach().double().cpu().numpy().tobytes())
        h.update(layer.activation.name.encode())
    return h.hexdigest()[:16]


def latents(seed: int, idx: Sequence[int], n0: int, dtype: torch.dtype) -> Tensor:
    """The latents ``z_i ~ N(0, I)`` of signals ``idx``, each from its own seed derived from ``(seed, "z", i)``.

    Returns
    -------
    Tensor of shape (len(idx), n0)
        Drawn in float64 then cast, so a signal's latent does not depend on ``dtype``'s
        generator path nor on which other signals share its chunk.
    """
    return torch.cat([torch.randn(1, n0, generator=torch.Generator().manual_seed(derive_seed(seed, "z", i)),
                                  dtype=torch.float64) for i in idx]).to(dtype)


_WORKER_CACHE: dict[Any, Any] = {}


def worker_cached(key: Any, make: Callable[[], Any]) -> Any:
    """``make()`` once per process for ``key`` (a generator loaded from disk once per worker, not per unit)."""
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = make()
    return _WORKER_CACHE[key]


@dataclass(frozen=True)
class GeneratorSource:
    """How a worker gets the generator of an experiment: a given one (pickled with the task), or a loader.

    Attributes
    ----------
    generator : Generator or None
        A generator the caller passed (small; sent with every unit).
    load : callable or None
        A module-level function ``load(*args) -> Generator`` called once per worker process.
    args : tuple
        Its arguments (small, picklable).
    """

    generator: Any = None
    load: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()

    def get(self) -> Any:
        if self.generator is not None:
            return self.generator
        if self.load is None:  # pragma: no cover - constructed by the experiments only
            raise ValueError("GeneratorSource: expected a generator or a loader")
        load = self.load
        return worker_cached((load.__module__, load.__qualname__, self.args), lambda: load(*self.args))


@dataclass(frozen=True)
class Job:
    """What a worker needs to run a unit of an experiment on a generator: the settings, the methods,
    where the generator comes from (a small, picklable object sent with every unit)."""

    config: Any
    methods: tuple[str, ...]
    source: GeneratorSource


def check_dtype(dtype: str) -> None:
    """InputError unless ``dtype`` is ``"float32"`` or ``"float64"`` (an experiment's ``dtype`` setting)."""
    if dtype not in ("float32", "float64"):
        raise InputError(f"dtype: expected 'float32' or 'float64', received {dtype!r}")


def available_methods(methods: Sequence[str]) -> tuple[list[str], list[str]]:
    """The methods of ``methods`` that work, and a line per skipped one (``"name: reason"``).

    Raises
    ------
    GenInvError
        When none of them works.
    """
    ok, missing = check_methods(methods)
    if not ok:
        raise GenInvError("methods: expected at least one available method, received none that works: "
                          + "; ".join(f"{m.name}: {m.reason}" for m in missing))
    return ok, [f"{m.name}: {m.reason}" for m in missing]


def execute(
    out_dir: str | Path,
    experiment: str,
    identity: dict[str, Any],
    units: Sequence[Unit],
    work: Callable[..., Any],
    *,
    desc: str,
    options: dict[str, dict[str, Any]] | None = None,
    executor: Any = None,
    threads: int | None = None,
    progress: bool = True,
    max_units: int | None = None,
    callback: Callable[[Unit, int], None] | None = None,
) -> int:
    """Run every unit of an experiment that still has missing records, then write ``records.csv``.

    Parameters
    ----------
    out_dir, experiment, identity
        The record store: its directory, the experiment's name and the settings that decide each
        trial's result (see :class:`geninv.experiments.records.RecordStore`).
    units, work
        The units and the module-level trial function (``functools.partial`` of one) that the
        executor runs (see :func:`geninv.experiments.records.run_units`).
    desc : str
        Label of the progress bar.
    options : dict, optional
        Each method's options: a resumed run refuses records made with other ones.
    executor : str, concurrent.futures.Executor or None
        Where the units run (``"serial"``, ``"processes:N"``, ``"dask:local:N"``,
        ``"dask:ADDRESS"``, or an executor); see :mod:`geninv.experiments.executors`.
    threads : int, optional
        Torch threads per worker, stamped on each record.
    progress, max_units, callback
        See :func:`geninv.experiments.records.run_units` (``max_units`` and ``callback`` are
        used by the resume tests).

    Returns
    -------
    int
        How many units ran.
    """
    with RecordStore(out_dir, experiment, identity) as store:
        if options is not None:
            store.check_method_options(options)
        if store.dropped_torn_line:
            say(f"{store.dir}: dropped a half-written last record left by an interrupted run")
        if store.other_code:
            say(f"{store.dir}: resuming records made by other geninv sources ({', '.join(store.other_code)}); "
                "each record carries its 'code' fingerprint")
        ran = run_units(store, units, work, executor=executor, threads=threads, progress=progress, desc=desc,
                        max_units=max_units, callback=callback)
        store.write_csv()
    return ran


def save_figure(fig: Any, path: Path) -> Path:
    """Write the laid-out ``fig`` to ``path`` (PNG, 110 dpi) and close it; returns ``path``."""
    from geninv._optional import pyplot

    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def load_generator_for(name: str, dtype: torch.dtype, seed: int = 0) -> tuple[geninv.Generator, str]:
    """The MNIST generator, or the random stand-in when ``name == "random"`` or the weights are missing.

    Returns ``(G, description)``; the description says which one it is.
    """
    if name == "mnist":
        st = mnist_status()
        if st.available:
            G = geninv.load_mnist_generator().to(dtype=dtype)  # type: ignore[attr-defined]
            return G, f"the shipped MNIST generator {G.dims} ({G.output_activation.name} output)"
        say(f"the MNIST generator is unavailable ({st.reason}); using the random stand-in "
            f"{list(STAND_IN_DIMS)} (PLU output, biases) instead")
    G = geninv.random_generator(list(STAND_IN_DIMS), "plu", seed=derive_seed(seed, "stand-in"), bias=True, dtype=dtype)
    return G, f"random {list(STAND_IN_DIMS)} plu, biases"


def noise_generator(name: str, dtype: str, seed: int) -> geninv.Generator:
    """The generator of :func:`load_generator_for` alone (what a worker loads, once per process)."""
    return load_generator_for(name, getattr(torch, dtype), seed)[0]


def generator_phrase(description: str) -> str:
    """``"the shipped MNIST generator [...]"`` as it is, anything else as ``"generator <description>"``
    (for titles: "... on <phrase>")."""
    return description if description.startswith(("the ", "a ", "an ")) else f"generator {description}"


def quantize_8bit(y: Tensor) -> Tensor:
    """``(y + 1) / 2`` rounded to multiples of 1/255, mapped back: 8-bit images in [-1, 1]."""
    return torch.round((y + 1) / 2 * 255) / 255 * 2 - 1


def noisy_images(y0: Tensor, snr_db: float, seed: int, idx: Sequence[int]) -> tuple[Tensor, Tensor]:
    """``y0`` (B, n) plus white noise at input SNR ``snr_db``, and the noise std per image (B,).

    Each image ``idx[j]`` has its own draw, seeded from ``(seed, "noise", snr_db, idx[j])``, so a
    chunk's result does not depend on the chunking.
    """
    ys, ss = [], []
    for j, i in enumerate(idx):
        yj, sj = geninv.add_noise(y0[j:j + 1], float(snr_db), seed=derive_seed(seed, "noise", str(snr_db), i))
        ys.append(yj)
        ss.append(sj)
    return torch.cat(ys), torch.cat(ss)


def signal_identity(config: Any, generator_id: str, description: str) -> dict[str, Any]:
    """The settings that decide the trials of an experiment on generated signals (noise, compressed
    sensing): seed, dtype, chunk size, the generator (fingerprint and description) and each method's
    options; the experiment adds its own."""
    return {"seed": config.seed, "dtype": config.dtype, "batch": config.batch, "generator": generator_id,
            "generator_description": description,
            "options": {m: dict(v) for m, v in sorted(config.options.items())}}


def check_signal_config(config: Any, known: Sequence[str]) -> None:
    """InputError naming the setting unless ``config`` (images, batch, methods among ``known``,
    dtype, generator "mnist" or "random") is valid."""
    if config.images < 1 or config.batch < 1:
        raise InputError(f"images, batch: expected positive integers, received {config.images}, {config.batch}")
    unknown = [m for m in config.methods if m not in known]
    if unknown:
        raise InputError(f"methods: expected names among {list(known)}, received {unknown}")
    check_dtype(config.dtype)
    if config.generator not in ("mnist", "random"):
        raise InputError(f"generator: expected 'mnist' or 'random', received {config.generator!r}")


def resolve_generator(generator: geninv.Generator | None, config: Any) -> tuple[geninv.Generator, str, GeneratorSource]:
    """The generator of a run on generated signals: ``generator`` when given (``"given"``), else
    :func:`load_generator_for` ``config.generator``; returns ``(G, description, source)`` with
    ``source`` what the workers get it from (the given one, or the loader, once per process)."""
    if generator is not None:
        G = generator.to(dtype=getattr(torch, config.dtype))
        return G, "given", GeneratorSource(G)
    G, desc = load_generator_for(config.generator, getattr(torch, config.dtype), config.seed)
    return G, desc, GeneratorSource(load=noise_generator, args=(config.generator, config.dtype, config.seed))


def attempt(key: str, errors: list[tuple[str, str]], call: Callable[[], Any]) -> tuple[Any, float] | None:
    """``(call(), seconds)`` with warnings silenced (non-convergence is recorded per trial), or None
    after logging a :class:`geninv.GenInvError` (the method refused the signal) under ``key``."""
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = call()
    except GenInvError as e:
        errors.append((key, f"{type(e).__name__}: {e}"))
        return None
    return res, time.perf_counter() - t0

