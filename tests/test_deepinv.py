"""deepinv both ways, with the real deepinv package: physics as geninv operators, geninv in dinv.test."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

import geninv
from geninv import InputError, Mask, Matrix, ShapeError
from geninv.operators import adjointness_test

try:
    from geninv.integrations import deepinv as gdi
except ImportError as _err:  # deepinv (or one of its dependencies) missing or broken on this machine
    pytest.skip(
        f"deepinv cannot be imported here, so the deepinv bridge is untested: {_err}", allow_module_level=True
    )

dinv = gdi.dinv
IMG = (1, 28, 28)
N = 784
F64 = torch.float64
# Adjointness: two dot products of length <= 784 rounded in the dtype (eps 1.2e-7 / 2.2e-16).
ADJ_TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
SNR_TOL_DB = 0.1  # the target: the wrapped call gives the native call's SNR to 0.1 dB


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _physics(kind: str, *, sigma: float = 0.0, flat: bool = False) -> object:
    """A deepinv physics (float32, deepinv's default) with Gaussian noise ``sigma`` (0: none)."""
    noise = dinv.physics.GaussianNoise(sigma=sigma, rng=_gen()) if sigma else dinv.physics.ZeroNoise()
    size = (N,) if flat else IMG
    if kind == "inpainting":
        return dinv.physics.Inpainting(img_size=size, mask=0.6, pixelwise=not flat, rng=torch.Generator().manual_seed(1),
                                        noise_model=noise)
    if kind == "cs":
        return dinv.physics.CompressedSensing(m=300, img_size=IMG, rng=torch.Generator().manual_seed(2), noise_model=noise)
    if kind == "denoising":
        return dinv.physics.Denoising(noise_model=noise)
    if kind == "blur":  # a general image operator (circular convolution), no geninv counterpart
        filt = dinv.physics.blur.gaussian_blur(sigma=(1.5, 1.5))
        return dinv.physics.Blur(filter=filt, padding="circular", noise_model=noise)
    if kind == "soft_inpainting":  # a non-binary mask: not a geninv Mask, wrapped as a general operator
        w = torch.rand((1, *IMG), generator=torch.Generator().manual_seed(4))
        return dinv.physics.Inpainting(img_size=IMG, mask=w, noise_model=noise)
    raise AssertionError(kind)


def _native(kind: str, physics: object) -> object:
    """geninv's own operator for the same physics (None: the identity)."""
    if kind == "inpainting":
        return Mask(physics.mask.reshape(1, N) != 0)
    if kind == "cs":
        return Matrix(physics._A.double())
    return None


@pytest.fixture(scope="module")
def G() -> geninv.Generator:
    return geninv.random_generator([20, 200, N], "tanh", dtype=F64, seed=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["inpainting", "cs", "denoising", "blur", "soft_inpainting"])
def test_adjointness_of_wrapped_physics(kind: str, dtype: torch.dtype) -> None:
    shape = IMG
    op = gdi.as_operator(_physics(kind), shape)
    assert op.shape[1] == N
    assert adjointness_test(op, dtype=dtype, batch=3) < ADJ_TOL[dtype]


def test_mapping_to_native_operators() -> None:
    ip = _physics("inpainting")
    op = gdi.as_operator(ip)
    assert isinstance(op, gdi.PhysicsMask) and isinstance(op, Mask)
    assert torch.equal(op.mask, ip.mask.reshape(1, N) != 0)
    den = gdi.as_operator(_physics("denoising"), IMG)
    assert isinstance(den, gdi.PhysicsIdentity) and den.shape == (N, N)
    assert isinstance(gdi.as_operator(_physics("soft_inpainting")), gdi.PhysicsOperator)
    cs = _physics("cs")
    op = gdi.as_operator(cs)
    assert isinstance(op, gdi.PhysicsOperator) and op.shape == (300, N) and op.signal_shape == IMG
    x = torch.randn(3, N, generator=_gen(), dtype=F64)
    A = cs._A.double()
    # float32 physics, float64 data: a float64 copy of the physics, the same matrix.
    assert torch.allclose(op.forward(x), x @ A.T, rtol=0, atol=1e-12)
    assert torch.allclose(op.adjoint(op.forward(x)), x @ A.T @ A, rtol=0, atol=1e-11)
    # compute_sqnorm approaches ||A|| from below; the margin keeps the norm an upper bound.
    true = float(torch.linalg.svdvals(A)[0])
    assert true <= op.norm() <= true * (1 + 2 * gdi.NORM_MARGIN)


def test_noise_level_is_read_from_the_physics() -> None:
    assert gdi.as_operator(_physics("cs")).noise_level is None
    assert gdi.as_operator(_physics("cs", sigma=0.05)).noise_level == pytest.approx(0.05)
    assert gdi.as_operator(_physics("denoising"), IMG).noise_level is None
    per_sample = dinv.physics.Denoising(noise_model=dinv.physics.GaussianNoise(sigma=torch.tensor([0.1, 0.2])))
    assert torch.allclose(gdi.as_operator(per_sample, IMG).noise_level, torch.tensor([0.1, 0.2], dtype=F64))
    poisson = dinv.physics.Denoising(noise_model=dinv.physics.PoissonNoise(gain=0.1))
    with pytest.warns(UserWarning, match="GaussianNoise only"):
        assert gdi.as_operator(poisson, IMG).noise_level is None


def _data(G: geninv.Generator, physics: object, kind: str, B: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Signals x = G(z) (B, 784) and measurements y = physics(x), noise drawn once here (float64 copy)."""
    _, x = G.sample(B, seed=3)
    p64 = copy.deepcopy(physics).to(F64)
    if isinstance(getattr(p64, "dtype", None), torch.dtype):
        p64.dtype = F64
    flat = tuple(getattr(physics, "img_size", None) or IMG) == (N,)
    with torch.no_grad():
        y = p64(x if flat else x.reshape(B, *IMG))
    return x, y


def _snr(G: geninv.Generator, res: geninv.SolveResult, x: torch.Tensor) -> torch.Tensor:
    return geninv.snr(G(res.z), x)


# flat: signals (B, 784) (an Inpainting on img_size (784,), a Denoising on flat data); flat_y: an
# image-shaped physics given flat measurements. deepinv's CompressedSensing needs a (C, H, W)
# img_size and its measurements are (B, m) either way: one layout.
LAYOUTS = [("inpainting", "image"), ("inpainting", "flat"), ("inpainting", "flat_y"), ("cs", "image"),
           ("denoising", "image"), ("denoising", "flat")]


@pytest.mark.parametrize("sigma", [0.0, 0.05])
@pytest.mark.parametrize("kind, layout", LAYOUTS)
def test_invert_with_physics_equals_native(G: geninv.Generator, kind: str, sigma: float, layout: str) -> None:
    physics = _physics(kind, sigma=sigma, flat=(layout == "flat" and kind == "inpainting"))
    x, y = _data(G, physics, kind)
    if layout in ("flat", "flat_y"):
        y = y.reshape(y.shape[0], -1)  # measurements passed flat (B, m)
    native_opts = {"noise_level": sigma} if sigma else {}
    ref = geninv.invert(G, y.reshape(y.shape[0], -1), measure=_native(kind, physics), **native_opts)
    res = geninv.invert(G, y, measure=physics)  # recognized, wrapped, sigma read as noise_level
    s_ref, s = _snr(G, ref, x), _snr(G, res, x)
    if sigma:
        assert bool(((s - s_ref).abs() < SNR_TOL_DB).all()), (s, s_ref)
        assert bool((s < 80).all())  # noisy: a finite SNR, set by the noise, compared above
    else:
        # Noiseless: both recover the planted signal to float64 rounding (an SNR far above any noise).
        assert bool((s > 150).all()) and bool((s_ref > 150).all()), (s, s_ref)


@pytest.mark.parametrize("kind, layout", LAYOUTS)
def test_reconstructor_in_dinv_test_equals_native(G: geninv.Generator, kind: str, layout: str) -> None:
    flat = layout == "flat"
    physics = _physics(kind, sigma=0.05, flat=flat and kind == "inpainting")
    x, y = _data(G, physics, kind)
    if (flat and kind == "denoising") or layout == "flat_y":
        y = y.reshape(y.shape[0], N)
    shape = (N,) if flat and kind != "cs" else IMG
    ximg = x.reshape(x.shape[0], *shape)
    ref = geninv.invert(G, y.reshape(y.shape[0], -1), measure=_native(kind, physics), noise_level=0.05)
    model = gdi.GenInvReconstructor(G, signal_shape=(N,) if flat and kind == "denoising" else None)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ximg, y), batch_size=x.shape[0])
    metric = dinv.metric.PSNR(max_pixel=2.0)  # images in [-1, 1]
    out = dinv.test(model, loader, physics, metrics=metric, online_measurements=False, compare_no_learning=False,
                    show_progress_bar=False, verbose=False, non_blocking_transfers=False)
    assert model.z_hat is not None and model.z_hat.shape == (x.shape[0], 20)
    assert isinstance(model.result, geninv.SolveResult)
    assert bool(((_snr(G, model.result, x) - _snr(G, ref, x)).abs() < SNR_TOL_DB).all())
    native_psnr = float(metric(G(ref.z).reshape(ximg.shape), ximg).mean())
    assert abs(out["PSNR"] - native_psnr) < SNR_TOL_DB
    x_hat = model(y, physics)
    assert x_hat.shape == ximg.shape and x_hat.dtype == y.dtype


def test_reconstructor_float32_physics_and_generator() -> None:
    G32 = geninv.random_generator([10, 100, N], "tanh", dtype=torch.float32, seed=2)
    _, x = G32.sample(2, seed=0)
    physics = _physics("cs")
    y = physics.A(x.reshape(2, *IMG))
    x_hat = gdi.GenInvReconstructor(G32)(y, physics)
    assert x_hat.dtype == torch.float32 and x_hat.shape == (2, *IMG)
    # float32 planted recovery: well above the float32 noise floor of the measurements.
    assert bool((geninv.snr(x_hat.reshape(2, N), x) > 40).all())


def test_the_noisy_forward_is_never_called(G: geninv.Generator) -> None:
    physics = _physics("cs", sigma=0.05)
    x, y = _data(G, physics, "cs")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the noisy physics(x) was called")

    physics.forward = refuse
    physics.noise = refuse
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", geninv.ConvergenceWarning)  # 20 iterations: only the calls matter here
        res = geninv.invert(G, y, method="latent_pursuit", measure=physics, max_iter=20)
        assert bool(torch.isfinite(res.z).all())
        gdi.GenInvReconstructor(G, method="latent_pursuit", max_iter=20)(y, physics)


def test_noise_warnings(G: geninv.Generator) -> None:
    physics = _physics("cs", sigma=0.05)
    _, y = _data(G, physics, "cs")
    with pytest.warns(UserWarning, match="does not model"):
        geninv.invert(G, y, method="gd", measure=physics, max_iter=5)
    with pytest.warns(UserWarning, match="direct solver call does not read"):
        geninv.latent_pursuit(G, y, measure=physics, max_iter=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        geninv.invert(G, y, method="latent_pursuit", measure=physics, noise_level=0.05, max_iter=20)  # the noise level given: no noise warning
        geninv.invert(G, y, method="latent_pursuit", measure=physics, max_iter=20)  # read from the physics: none either
    assert not [w for w in caught if "noise" in str(w.message)]


def test_bad_physics_and_shapes(G: geninv.Generator) -> None:
    with pytest.raises(InputError, match="LinearPhysics"):
        gdi.as_operator(torch.nn.Identity(), IMG)
    with pytest.raises(InputError, match="signal_shape"):
        gdi.as_operator(_physics("denoising"))
    with pytest.raises(InputError, match="signal_shape"):
        gdi.as_operator(_physics("cs"), (1, 0, 28))
    small = dinv.physics.CompressedSensing(m=10, img_size=(1, 8, 8))
    with pytest.raises(ShapeError, match="784"):
        geninv.invert(G, torch.zeros(2, 10, dtype=F64), measure=small)
    with pytest.raises(ShapeError, match="y: expected measurements"):
        geninv.invert(G, torch.zeros(2, 299, dtype=F64), measure=_physics("cs"))
    with pytest.raises(InputError, match="method"):
        gdi.GenInvReconstructor(G, method="csgm")
    with pytest.raises(InputError, match="G: expected a geninv.Generator"):
        gdi.GenInvReconstructor(torch.nn.Linear(2, 3))
    with pytest.raises(InputError, match="y: expected a torch.Tensor"):
        gdi.GenInvReconstructor(G)([[0.0] * 300], _physics("cs"))
    with pytest.raises(InputError, match="mask, measure"):
        geninv.invert(G, torch.zeros(2, N, dtype=F64), mask=torch.ones(N, dtype=torch.bool), measure=_physics("inpainting"))


def test_torchvision_stand_in_explains_itself() -> None:
    if not gdi.TORCHVISION_STAND_IN:
        pytest.skip("the real torchvision is importable here; the stand-in is not in use")
    import torchvision.transforms

    with pytest.raises(ImportError, match="real torchvision"):
        torchvision.transforms.CenterCrop(3)
    assert math.isfinite(float(gdi.as_operator(_physics("cs")).norm()))


def test_per_sample_inpainting_masks(G: geninv.Generator) -> None:
    masks = torch.rand((4, *IMG), generator=_gen()) > 0.4  # a different mask per image
    physics = dinv.physics.Inpainting(img_size=IMG, mask=masks.float())
    op = gdi.as_operator(physics)
    assert isinstance(op, gdi.PhysicsMask) and torch.equal(op.mask, masks.reshape(4, N))
    x, y = _data(G, physics, "inpainting")
    ref = geninv.invert(G, y.reshape(4, N), mask=masks.reshape(4, N))
    res = geninv.invert(G, y, measure=physics)
    assert torch.equal(res.z, ref.z)  # the same pixel-mask path: the same arithmetic
