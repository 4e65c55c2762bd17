"""deepinv physics as geninv operators (the extra ``geninv[deepinv]``); the reconstructor is in
:mod:`geninv.integrations.deepinv`.

:func:`as_operator` wraps a deepinv ``LinearPhysics`` as a geninv operator (``forward``,
``adjoint``, ``shape``, ``norm``) acting on flat batches (B, n). It applies the physics'
noiseless ``A`` and ``A_adjoint``, never its noisy ``physics(x)``, which would draw fresh noise
at every solver iteration. ``Inpainting`` becomes a :class:`geninv.Mask` and ``Denoising`` the
identity; the Gaussian ``noise_model.sigma`` of the physics is kept as ``noise_level``.
:func:`geninv.invert` uses :func:`wrap_measurement` and :func:`noise_options` when it is given a
deepinv physics.

deepinv imports torchvision when it is imported. Where torchvision cannot be loaded (a CPU-only
``torch`` beside PyPI's torchvision, which is built for another torch), importing this module
first puts a stand-in for torchvision in ``sys.modules`` (:mod:`geninv.integrations._torchvision_stub`).
"""

from __future__ import annotations

import copy
import math
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from geninv.exceptions import InputError, MissingDependencyError, ShapeError, describe
from geninv.integrations import _torchvision_stub, is_deepinv_physics
from geninv.operators import Identity, Mask, check_width

if "deepinv" not in sys.modules:
    _torchvision_stub.install()
try:
    import deepinv as dinv
except ImportError as _err:
    raise MissingDependencyError(
        f"geninv.integrations.deepinv: expected the optional package 'deepinv', which cannot be imported ({_err}); "
        "install it with: pip install 'geninv[deepinv]' (beside a CPU-only torch: pip install --no-deps deepinv, "
        "then its dependencies but torchvision, as in geninv's Makefile)"
    ) from None

__all__ = [
    "as_operator", "physics_noise_level", "PhysicsOperator", "PhysicsMask", "PhysicsIdentity",
    "NORM_MARGIN", "TORCHVISION_STAND_IN", "wrap_measurement", "noise_options", "infer_signal_shape",
]

#: Whether ``torchvision`` is geninv's stand-in (True) or the real package (False).
TORCHVISION_STAND_IN: bool = _torchvision_stub.installed()

#: Relative margin added to the power-iteration norm (power iteration approaches ``||A||`` from below).
NORM_MARGIN = 0.01


def shape_tuple(signal_shape: object) -> tuple[int, ...]:
    if isinstance(signal_shape, int) and not isinstance(signal_shape, bool):
        signal_shape = (signal_shape,)
    if isinstance(signal_shape, torch.Size):
        signal_shape = tuple(signal_shape)
    if not (isinstance(signal_shape, (tuple, list)) and signal_shape
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in signal_shape)):
        raise InputError(
            f"signal_shape: expected the shape of one signal, e.g. (1, 28, 28) or (784,), received {describe(signal_shape)}"
        )
    return tuple(int(s) for s in signal_shape)


def _home(physics: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the physics' own tensors (float32 on the CPU when it holds none)."""
    for t in list(physics.buffers()) + list(physics.parameters()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def physics_noise_level(physics: object) -> float | Tensor | None:
    """The standard deviation of the physics' Gaussian noise, or None for noiseless physics.

    Returns
    -------
    float, Tensor of shape (B,), or None
        ``noise_model.sigma`` of a ``GaussianNoise`` (a float, or one value per sample); None
        for no noise model, ``ZeroNoise`` or ``sigma = 0``. Another noise model (Poisson, ...)
        warns that geninv cannot read it and returns None.
    """
    nm = getattr(physics, "noise_model", None)
    if nm is None or isinstance(nm, dinv.physics.ZeroNoise):
        return None
    if not isinstance(nm, dinv.physics.GaussianNoise):
        warnings.warn(
            f"physics.noise_model: geninv reads the sigma of a GaussianNoise only, received {type(nm).__name__}; "
            "the signals are inverted as noiseless unless noise_level= is given",
            UserWarning, stacklevel=3,
        )
        return None
    sigma = torch.as_tensor(nm.sigma).detach().to("cpu", torch.float64).flatten()
    if sigma.numel() == 0 or not bool((sigma == 0).logical_not().any()):
        return None
    return float(sigma[0]) if sigma.numel() == 1 else sigma


class _FromPhysics:
    """What every wrapped physics carries: the physics, the image shape, the measurement shape, the noise."""

    physics: Any
    signal_shape: tuple[int, ...]
    measurement_shape: tuple[int, ...]
    noise_level: float | Tensor | None

    def _set_physics(self, physics: Any, signal_shape: tuple[int, ...], measurement_shape: tuple[int, ...]) -> None:
        self.physics = physics
        self.signal_shape = signal_shape
        self.measurement_shape = measurement_shape
        self.noise_level = physics_noise_level(physics)

    def flat_measurement(self, y: object, name: str = "y") -> Tensor:
        """``y`` of shape (B, *measurement_shape), (B, m) or (m,) as (B, m) (or (m,) unchanged)."""
        m = math.prod(self.measurement_shape)
        if not isinstance(y, Tensor):
            raise InputError(f"{name}: expected a torch.Tensor of measurements, received {describe(y)}")
        if y.ndim >= 2 and tuple(y.shape[1:]) == self.measurement_shape:
            return y.reshape(y.shape[0], m)
        if y.ndim in (1, 2) and y.shape[-1] == m:
            return y
        raise ShapeError(
            f"{name}: expected measurements of shape (B, {', '.join(map(str, self.measurement_shape))}) or (B, {m}), "
            f"received shape {tuple(y.shape)}"
        )

    def image(self, x: Tensor) -> Tensor:
        """Flat signals (B, n) in the physics' image shape (B, *signal_shape)."""
        return x.reshape(x.shape[0], *self.signal_shape)


class PhysicsMask(_FromPhysics, Mask):
    """A deepinv ``Inpainting`` as a geninv pixel mask (``mask`` flattened to (1 or B, n))."""

    def __init__(self, physics: Any, signal_shape: tuple[int, ...], mask: Tensor) -> None:
        Mask.__init__(self, mask)
        self._set_physics(physics, signal_shape, signal_shape)


class PhysicsIdentity(_FromPhysics, Identity):
    """A deepinv ``Denoising`` as the identity on R^n."""

    def __init__(self, physics: Any, signal_shape: tuple[int, ...]) -> None:
        Identity.__init__(self, math.prod(signal_shape))
        self._set_physics(physics, signal_shape, signal_shape)


class PhysicsOperator(_FromPhysics):
    """Any deepinv ``LinearPhysics`` as a geninv operator on flat batches: ``A`` and ``A_adjoint`` only.

    A batch ``x`` of shape (B, n) is reshaped to (B, *signal_shape), passed to ``physics.A``,
    and the result flattened to (B, m); ``adjoint`` the other way with ``physics.A_adjoint``.
    Applied to data of another dtype or device than the physics' own tensors, it uses a copy
    of the physics moved there (cached), so a float32 physics serves float64 data exactly.

    Parameters
    ----------
    physics : deepinv.physics.LinearPhysics
    signal_shape : tuple of int
        Shape of one signal as the physics expects it, e.g. (1, 28, 28).
    power_iters : int
        Iterations of deepinv's ``compute_sqnorm`` for :meth:`norm`.
    """

    def __init__(self, physics: Any, signal_shape: tuple[int, ...], *, power_iters: int = 500) -> None:
        self._home = _home(physics)
        self._copies: dict[tuple[torch.device, torch.dtype], Any] = {self._home: physics}
        self._norm: float | None = None
        self.power_iters = power_iters
        device, dtype = self._home
        try:
            with torch.no_grad():
                probe = physics.A(torch.zeros((1, *signal_shape), device=device, dtype=dtype))
        except (RuntimeError, ValueError, IndexError, TypeError) as e:
            raise ShapeError(
                f"signal_shape: expected a shape that {type(physics).__name__}.A accepts, received {signal_shape} "
                f"(A failed on a batch of shape (1, {', '.join(map(str, signal_shape))}): {e})"
            ) from None
        if not isinstance(probe, Tensor) or probe.ndim == 0 or probe.shape[0] != 1:
            raise ShapeError(
                f"physics: expected A to map a batch of shape (1, {', '.join(map(str, signal_shape))}) to a batch of "
                f"measurements, received {describe(probe)}"
            )
        self._set_physics(physics, signal_shape, tuple(int(s) for s in probe.shape[1:]))

    @property
    def shape(self) -> tuple[int, int]:
        return (math.prod(self.measurement_shape), math.prod(self.signal_shape))

    def _physics_for(self, t: Tensor) -> Any:
        key = (t.device, t.dtype)
        if key not in self._copies:
            p = copy.deepcopy(self.physics).to(device=t.device, dtype=t.dtype)
            if isinstance(getattr(p, "dtype", None), torch.dtype):  # e.g. CompressedSensing casts its input to .dtype
                p.dtype = t.dtype
            self._copies[key] = p
        return self._copies[key]

    def forward(self, x: Tensor) -> Tensor:
        return self._apply(x, "x", "forward")

    def adjoint(self, r: Tensor) -> Tensor:
        return self._apply(r, "r", "adjoint")

    def _apply(self, t: Tensor, name: str, which: str) -> Tensor:
        """``A t`` (``which="forward"``) or ``A^T t`` (``"adjoint"``) on a flat (B, width) or (width,) ``t``."""
        m, n = self.shape
        forward = which == "forward"
        width, out_width = (n, m) if forward else (m, n)
        check_width(t, width, name, f"PhysicsOperator.{which}")
        tb = t.reshape(-1, *(self.signal_shape if forward else self.measurement_shape))
        physics = self._physics_for(t)
        out = (physics.A if forward else physics.A_adjoint)(tb).reshape(tb.shape[0], out_width)
        return out[0] if t.ndim == 1 else out

    def norm(self) -> float:
        """``||A||_2`` from deepinv's ``compute_sqnorm`` (power iteration in float64), times ``1 + NORM_MARGIN``."""
        if self._norm is None:
            device = self._home[0]
            x0 = torch.zeros((1, *self.signal_shape), device=device, dtype=torch.float64)
            p = self._physics_for(x0)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "convergence not reached": the margin covers it
                sq = p.compute_sqnorm(x0, max_iter=self.power_iters, tol=1e-9, verbose=False)
            self._norm = math.sqrt(max(float(sq), 0.0)) * (1.0 + NORM_MARGIN)
        return self._norm

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)


def _probe_equal(physics: Any, signal_shape: tuple[int, ...], expected: Any, batch: int = 2) -> bool:
    """Whether ``physics.A`` acts as ``expected`` (a function of x) on a random batch (bitwise)."""
    device, dtype = _home(physics)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(0)
    x = torch.randn((batch, *signal_shape), generator=gen, dtype=torch.float64).to(device, dtype)
    try:
        with torch.no_grad():
            y = physics.A(x)
            return isinstance(y, Tensor) and y.shape == x.shape and bool(torch.equal(y, expected(x)))
    except (RuntimeError, ValueError, IndexError, TypeError):  # shapes that do not broadcast: not this operator
        return False


def as_operator(physics: Any, signal_shape: int | Sequence[int] | None = None) -> PhysicsMask | PhysicsIdentity | PhysicsOperator:
    """Wrap a deepinv ``LinearPhysics`` as a geninv operator on flat signals (B, n).

    Parameters
    ----------
    physics : deepinv.physics.LinearPhysics
        Only its noiseless ``A`` and ``A_adjoint`` are used.
    signal_shape : int or tuple of int, optional
        Shape of one signal for the physics, e.g. ``(1, 28, 28)`` (``n`` is its product). Default:
        ``physics.img_size`` (``Inpainting``, ``CompressedSensing``, ...); required for physics
        without one (``Denoising``).

    Returns
    -------
    PhysicsMask, PhysicsIdentity or PhysicsOperator
        An ``Inpainting`` whose ``A`` is the product with its 0/1 mask: a :class:`geninv.Mask`;
        a ``Denoising`` (``A x = x``): a :class:`geninv.Identity`; anything else: a
        :class:`PhysicsOperator`. Each has ``physics``, ``signal_shape``, ``measurement_shape``,
        ``noise_level`` (:func:`physics_noise_level`), ``flat_measurement(y)`` and ``image(x)``.

    Raises
    ------
    InputError
        If ``physics`` is not a deepinv ``LinearPhysics``, or ``signal_shape`` is missing or malformed.

    Examples
    --------
    >>> op = as_operator(dinv.physics.CompressedSensing(m=50, img_size=(1, 8, 8)))
    >>> op.shape, op.signal_shape, op.noise_level
    ((50, 64), (1, 8, 8), None)
    """
    if not isinstance(physics, dinv.physics.LinearPhysics):
        raise InputError(
            "physics: expected a deepinv LinearPhysics (with A and A_adjoint), received "
            + (f"the non-linear deepinv physics {type(physics).__name__}" if is_deepinv_physics(physics) else describe(physics))
        )
    if signal_shape is None:
        img_size = getattr(physics, "img_size", None)
        if img_size is None:
            raise InputError(
                f"signal_shape: expected the shape of one signal (e.g. (1, 28, 28)), received None for a "
                f"{type(physics).__name__}, which has no img_size"
            )
        signal_shape = tuple(img_size)
    shape = shape_tuple(signal_shape)
    n = math.prod(shape)
    if isinstance(physics, dinv.physics.Inpainting):
        mask = getattr(physics, "mask", None)
        if isinstance(mask, Tensor) and mask.numel() % n == 0 and mask.numel() >= n and not mask.is_complex():
            flat = mask.detach().reshape(-1, n)
            binary = bool(((flat == 0) | (flat == 1)).all())
            rows = flat.shape[0]  # one mask per sample (B rows) or one for all (a probe batch of 2)
            if binary and _probe_equal(physics, shape, lambda x: x * mask.reshape(rows, *shape), 2 if rows == 1 else rows):
                return PhysicsMask(physics, shape, flat != 0)
    if isinstance(physics, dinv.physics.Denoising) and _probe_equal(physics, shape, lambda x: x):
        return PhysicsIdentity(physics, shape)
    return PhysicsOperator(physics, shape)


def infer_signal_shape(physics: Any, n: int, y: object = None) -> tuple[int, ...]:
    """The image shape of signals of width ``n`` for ``physics``: its ``img_size``, ``y``'s shape, or (n,)."""
    img_size = getattr(physics, "img_size", None)
    if img_size is not None and math.prod(tuple(img_size)) == n:
        return tuple(int(s) for s in img_size)
    if isinstance(y, Tensor) and y.ndim > 2 and math.prod(y.shape[1:]) == n:
        return tuple(int(s) for s in y.shape[1:])
    return (n,)


def wrap_measurement(physics: Any, G: Any, y: object) -> tuple[PhysicsMask | PhysicsIdentity | PhysicsOperator, Any]:
    """``(as_operator(physics, shape), y flattened to (B, m))`` for the generator ``G`` (width ``G.output_dim``)."""
    n = int(G.output_dim)
    img_size = getattr(physics, "img_size", None)
    if img_size is not None and math.prod(tuple(img_size)) != n:
        raise ShapeError(
            f"measure: expected a physics acting on signals of {n} entries (the generator's output), received a "
            f"{type(physics).__name__} with img_size {tuple(img_size)}"
        )
    op = as_operator(physics, infer_signal_shape(physics, n, y))
    if op.shape[1] != n:
        raise ShapeError(
            f"measure: expected a physics acting on signals of {n} entries (the generator's output), received a "
            f"{type(physics).__name__} on shape {op.signal_shape}"
        )
    return op, (op.flat_measurement(y) if isinstance(y, Tensor) else y)


def noise_options(op: Any, method: str, options: dict[str, Any], *, takes_noise: bool, stacklevel: int = 3) -> dict[str, Any]:
    """``options`` with ``noise_level`` set from the physics' noise, where the method takes it.

    ``takes_noise``: whether ``method`` accepts ``noise_level``. An explicit ``noise_level`` in ``options`` wins. A noisy physics with a method that has no
    noise-aware form warns that the noise is not modelled.
    """
    sigma = getattr(op, "noise_level", None)
    if sigma is None or "noise_level" in options:
        return options
    if takes_noise:
        return {**options, "noise_level": sigma}
    warnings.warn(
        f"measure: the deepinv physics adds Gaussian noise (sigma {sigma}), which method {method!r} does not model; "
        "use method='latent_pursuit' or 'layered_bp' (they read the noise level) for noisy signals",
        UserWarning, stacklevel=stacklevel,
    )
    return options


