"""What the reproductions share: which inversion methods exist, and running one of them.

The reproductions call the public API only (``geninv.invert``, ``geninv.certify``,
``geninv.load_mnist_generator``). A method that the installed library does not provide is
*unavailable*: it is reported with the reason and no record is written for it, so a later
run (after it lands) fills it in. Nothing is ever made up in its place.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import geninv
from geninv.metrics import snr
from geninv.solvers.registry import REGISTRY

__all__ = [
    "MethodStatus", "method_status", "certify_status", "mnist_status", "solve", "layer_snrs", "say",
    "PAPER_METHODS", "PAPER_LABELS", "PAPER_COLORS", "solver_of", "generator_fingerprint", "latents", "worker_cached", "GeneratorSource",
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
    """A short hash of the weights, so records of two different generators never mix."""
    h = hashlib.sha256()
    for layer in G.layers:
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
    from geninv.experiments.records import derive_seed

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
