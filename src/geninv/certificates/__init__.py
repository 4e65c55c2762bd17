"""Invertibility certificates: when is a generator's inverse unique, and how stable is it?

- :func:`mutual_coherence`, :func:`coherence_of_rows`, :func:`welch_bound`, :func:`babel`
- :func:`spark` (exact or a certified interval), :func:`s_rank`, :func:`s_spark`, :func:`s_coherence`
  (returning :class:`Bound`)
- :func:`theorem2_bound`: Layered Basis-Pursuit's certified error (docs/method.md sec. 5)
- :func:`certify`: per-signal report (Theorem 1, Corollary 1, Theorem 2), verdict ``unique``
- :func:`certify_architecture`: distribution of cardinalities and Corollary 1 over sampled latents
"""

from geninv.certificates.architecture import ArchitectureReport, certify_architecture
from geninv.certificates.bounds import (
    LassoConstants,
    LayerBound,
    Theorem2Bound,
    coherence_condition,
    lasso_constants,
    theorem2_bound,
)
from geninv.certificates.certificate import Certificate, Condition
from geninv.certificates.coherence import babel, coherence_of_rows, mutual_coherence, welch_bound
from geninv.certificates.report import certify
from geninv.certificates.spark import Bound, numerical_rank, spark
from geninv.certificates.subsets import s_coherence, s_rank, s_spark

__all__ = [
    "mutual_coherence", "coherence_of_rows", "welch_bound", "babel",
    "Bound", "spark", "s_rank", "s_spark", "s_coherence", "numerical_rank",
    "LassoConstants", "LayerBound", "Theorem2Bound", "lasso_constants", "theorem2_bound", "coherence_condition",
    "Condition", "Certificate", "certify", "ArchitectureReport", "certify_architecture",
]
