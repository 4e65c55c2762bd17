"""geninv and deepinv, both ways (the extra ``geninv[deepinv]``).

- :func:`as_operator` wraps a deepinv ``LinearPhysics`` as a geninv operator (``forward``,
  ``adjoint``, ``shape``, ``norm``) acting on flat batches (B, n). It applies the physics'
  noiseless ``A`` and ``A_adjoint``, never its noisy ``physics(x)``, which would draw fresh
  noise at every solver iteration. ``Inpainting`` becomes a :class:`geninv.Mask` (the solvers'
  fast pixel-mask path) and ``Denoising`` the identity; the Gaussian ``noise_model.sigma`` of
  the physics is kept as ``noise_level``.
- :class:`GenInvReconstructor` is a ``deepinv.models.Reconstructor``: ``model(y, physics)``
  inverts the generator with :func:`geninv.invert` and returns ``G(z_hat)`` in the physics'
  image shape, so geninv runs inside ``deepinv.test`` and is scored by deepinv's metrics.
- ``geninv.invert(G, y, measure=physics)`` recognizes a deepinv physics and wraps it here.

deepinv imports torchvision when it is imported. Where torchvision cannot be loaded (a CPU-only
``torch`` beside PyPI's torchvision, which is built for another torch), importing this module
first puts a stand-in for torchvision in ``sys.modules`` (:mod:`geninv.integrations._torchvision_stub`):
deepinv's physics, ``Reconstructor``, ``CSGMGenerator`` and ``test`` (without plots or saved
images) use none of torchvision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from geninv.exceptions import InputError, ShapeError, describe
from geninv.integrations.deepinv_physics import (
    NORM_MARGIN,
    TORCHVISION_STAND_IN,
    PhysicsIdentity,
    PhysicsMask,
    PhysicsOperator,
    as_operator,
    dinv,
    infer_signal_shape,
    noise_options,
    physics_noise_level,
    shape_tuple,
)
from geninv.solvers import METHODS, invert, takes_noise_level
from geninv.solvers.checks import check_generator

__all__ = [
    "as_operator", "physics_noise_level", "GenInvReconstructor", "PhysicsOperator", "PhysicsMask", "PhysicsIdentity",
    "NORM_MARGIN", "TORCHVISION_STAND_IN",
]


class GenInvReconstructor(dinv.models.Reconstructor):
    """geninv as a deepinv reconstruction model: ``x_hat = model(y, physics) = G(z_hat)``.

    Parameters
    ----------
    G : geninv.Generator
        The generative model; its output width must be the number of entries of one signal.
    method : str
        Any method of :func:`geninv.invert` (default ``"auto"``, as there).
    signal_shape : tuple of int, optional
        Image shape of one signal; default from the physics (:func:`infer_signal_shape`).
    **options
        Passed to :func:`geninv.invert`. Without ``noise_level``, the physics' Gaussian
        ``noise_model.sigma`` is used by the methods that take one.

    Attributes
    ----------
    z_hat : Tensor of shape (B, n_0) or None
        The latent vectors of the last call.
    result : SolveResult or None
        The full result of the last call (per-sample convergence, verdicts, history).

    Examples
    --------
    >>> G = random_generator([8, 40, 64], "tanh", dtype=torch.float64)
    >>> physics = dinv.physics.CompressedSensing(m=48, img_size=(1, 8, 8), dtype=torch.float64)
    >>> x = G(G.sample(2, seed=0)[0]).reshape(2, 1, 8, 8)
    >>> model = GenInvReconstructor(G)
    >>> x_hat = model(physics.A(x), physics)
    >>> x_hat.shape, model.z_hat.shape, bool(model.result.converged.all())
    (torch.Size([2, 1, 8, 8]), torch.Size([2, 8]), True)
    """

    def __init__(self, G: Any, method: str = "auto", *, signal_shape: Sequence[int] | None = None, **options: Any) -> None:
        super().__init__()
        if not isinstance(method, str) or method not in METHODS:
            raise InputError(f"method: expected one of {sorted(METHODS)}, received {describe(method)}")
        self.G = check_generator(G)
        self.method = method
        self.signal_shape = None if signal_shape is None else shape_tuple(signal_shape)
        self.options = dict(options)
        self.z_hat: Tensor | None = None
        self.result: Any = None

    def forward(self, y: Tensor, physics: Any, **kwargs: Any) -> Tensor:
        """Invert ``y`` (B, *measurement_shape) measured by ``physics``; returns ``G(z_hat)`` of shape (B, *signal_shape)."""
        n = self.G.output_dim
        shape = self.signal_shape or infer_signal_shape(physics, n, y)
        op = as_operator(physics, shape)
        if op.shape[1] != n:
            raise ShapeError(
                f"physics: expected signals of {n} entries (the generator's output), received a {type(physics).__name__} "
                f"on shape {op.signal_shape}"
            )
        yy = op.flat_measurement(y)
        options = noise_options(op, self.method, self.options, takes_noise=takes_noise_level(self.method))
        with torch.enable_grad():  # deepinv.test runs models under no_grad; the gradient methods need autograd
            res = invert(self.G, yy, self.method, measure=op, **options)
        self.result, self.z_hat = res, res.z
        x_hat = self.G.like(res.z)(res.z).detach()
        return op.image(x_hat).to(y.dtype)
