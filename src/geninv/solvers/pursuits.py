"""The entry shared by Latent-Pursuit and Layered Basis-Pursuit: the checks of the problem and the
options, the image-layer domain per sample (a batch of mixed domains is solved group by group),
and the generator without hidden layers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from geninv.model.generator import Generator
from geninv.solvers.checks import check_informative, check_problem, default_tol
from geninv.solvers.image_layer import choose_domains
from geninv.solvers.measurement import Measurement
from geninv.solvers.options import PursuitOptions
from geninv.solvers.relu_output import check_relu_measure, is_relu_output
from geninv.solvers.result import SolveResult, no_hidden_layer, split_by_domain

__all__ = ["solve_pursuit"]

#: ``run(G, y, meas, domain, options, t0) -> SolveResult``: a pursuit on a checked problem.
Run = Callable[[Generator, Tensor, Measurement, str, PursuitOptions, float], SolveResult]


def solve_pursuit(name: str, public: Callable[..., SolveResult], run: Run, G: object, y: object, *, measure: object,
                  mask: object, options: dict[str, Any]) -> SolveResult:
    """Check a pursuit's problem and ``options`` (every keyword option of :class:`PursuitOptions`
    the public function takes, :func:`geninv.solvers.options.keyword_options`) and solve it.

    ``run`` solves a batch in one image domain; a batch whose samples take different domains
    (:func:`geninv.solvers.image_layer.choose_domains`) is solved by ``public`` per group. A
    ReLU output takes the 'support' domain (its support read off ``y``, module relu_output).
    """
    t0 = time.perf_counter()
    G, yy, meas = check_problem(G, y, measure, mask)
    o = PursuitOptions(**dict(options, tol=default_tol(yy.dtype) if options["tol"] is None else options["tol"]))
    image_domain = o.image_domain
    if is_relu_output(G) and image_domain == "auto":
        check_relu_measure(name, G, meas)
        domain, pre = "support", None
    else:
        domain, pre = choose_domains(image_domain, G, yy, meas)
    check_informative(G, yy, meas)
    if domain == "mixed":
        return split_by_domain(public, G, yy, meas, pre, {k: v for k, v in options.items() if k != "image_domain"})
    with torch.no_grad():
        if G.n_hidden == 0:
            return no_hidden_layer(name, G, yy, meas, t0)
        return run(G, yy, meas, domain, o, t0)
