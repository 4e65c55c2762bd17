"""geninv: invert deep generative models, and say when the inverse is unique.

Implements "When and How Can Deep Generative Models be Inverted?" (Aberdam, Simon, Elad,
2020): uniqueness certificates, the Oracle, Layered Basis-Pursuit and Latent-Pursuit, with
gradient-based and LP baselines.
"""

import geninv._threads  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)
from geninv.exceptions import (
    ConvergenceWarning,
    DomainError,
    GenInvError,
    InputError,
    MissingDependencyError,
    ModelFileError,
    NumericalError,
    ShapeError,
    UnsupportedLayerError,
)
from geninv.metrics import relative_error, snr
from geninv.model import PLU, Activation, Generator, Layer, Trace, load_generator, random_generator
from geninv.operators import GaussianMatrix, Identity, Mask, Matrix, add_noise, block_mask, random_mask
from geninv.solvers.result import SolveResult
from geninv.version import __version__

__all__ = [
    "__version__",
    "ConvergenceWarning", "DomainError", "GenInvError", "InputError", "MissingDependencyError", "ModelFileError",
    "NumericalError", "ShapeError", "UnsupportedLayerError",
    "snr", "relative_error",
    "PLU", "Activation", "Generator", "Layer", "Trace", "load_generator", "random_generator",
    "GaussianMatrix", "Identity", "Mask", "Matrix", "add_noise", "block_mask", "random_mask",
    "SolveResult",
]
# -- exports added by later modules (keep one block per module) --
# certificates: uniqueness (Theorem 1, Corollary 1) and stability (Theorem 2) of the inverse
from geninv.certificates import (  # noqa: E402
    ArchitectureReport,
    Bound,
    Certificate,
    certify,
    certify_architecture,
    coherence_of_rows,
    mutual_coherence,
    s_coherence,
    s_rank,
    s_spark,
    spark,
    theorem2_bound,
    welch_bound,
)

__all__ += [
    "certify", "certify_architecture", "Certificate", "ArchitectureReport", "Bound", "spark", "s_rank", "s_spark",
    "s_coherence", "mutual_coherence", "coherence_of_rows", "welch_bound", "theorem2_bound",
]

# data, training and the shipped MNIST generator
from geninv.weights import load_mnist_generator  # noqa: E402

__all__ += ["load_mnist_generator"]

# solvers: the public dispatcher and the paper's three inversion methods
from geninv.solvers import invert, latent_pursuit, layered_bp, oracle  # noqa: E402

__all__ += ["invert", "oracle", "layered_bp", "latent_pursuit"]

# the per-sample self-check of every result: per-layer SNR against a known latent
from geninv.solvers.verdict import layer_snr  # noqa: E402

__all__ += ["layer_snr"]

# any torch module: invertible hidden activations inverted layer by layer (Generator.from_torch reads the module)
from geninv.solvers.layerwise_inverse import layerwise_inverse  # noqa: E402

__all__ += ["layerwise_inverse"]

# large batches: chunked, resumable inversion under a memory budget
from geninv.solvers.chunked import invert_chunked  # noqa: E402

__all__ += ["invert_chunked"]

# layers as linear operators (matrix-free for convolutions) and batched CG supported least squares
from geninv.model.layer_ops import ChainOperator, DenseOperator, LayerOperator  # noqa: E402
from geninv.solvers.krylov import cg_supported_lstsq  # noqa: E402

__all__ += ["LayerOperator", "DenseOperator", "ChainOperator", "cg_supported_lstsq"]
