"""Benchmarks of the inversion methods: speed, FLOP rates, memory and signals per second.

``geninv bench`` (and ``benchmarks/run.py``) call :func:`run_bench`; see
:mod:`geninv.bench.runner` for what one run measures, :mod:`geninv.bench.flops` for the
analytic FLOP counts and :mod:`geninv.bench.machine` for the measured peaks.
"""

from geninv.bench.flops import count_matmul_flops, loop_flops, matmul_flops, network_flops
from geninv.bench.runner import BenchConfig, default_generators, quick_config, run_bench

__all__ = ["BenchConfig", "run_bench", "quick_config", "default_generators", "loop_flops", "count_matmul_flops",
           "matmul_flops", "network_flops"]
