"""Thread defaults of geninv's command line, set before torch starts its OpenMP runtime.

OpenMP threads that find their core busy spin while they wait (the default wait policy of
GNU OpenMP), so on a machine shared with other CPU-bound work a multi-threaded torch job runs
several times slower than a single-threaded one. Importing :mod:`geninv` therefore sets
``OMP_WAIT_POLICY=PASSIVE`` when the user has not set it and torch is not loaded yet (the
runtime reads it once, when it starts), and the command line runs with one torch thread unless
``--threads`` says otherwise (numpy's and scipy's BLAS pools too): measured on a 2-core machine, one thread is as fast as two on
these matrix sizes when the machine is idle and the fastest when it is loaded
(``scripts/measure_threads.py``).

``GENINV_NO_THREAD_DEFAULTS=1`` leaves the environment as it is (for measuring the
alternatives).
"""

from __future__ import annotations

import os
import sys

__all__ = ["passive_wait_default", "default_threads", "set_threads", "physical_cores"]


def passive_wait_default() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is set, torch is loaded, or the opt-out is set."""
    if os.environ.get("GENINV_NO_THREAD_DEFAULTS") or "torch" in sys.modules:
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def physical_cores() -> int:
    """Physical cores this process may run on (``/proc/cpuinfo``; else the logical CPU count)."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo") as f:
            proc, phys = None, "0"
            for line in f:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "processor":
                    proc = int(val)
                elif key == "physical id":
                    phys = val
                elif key == "core id" and proc in allowed:
                    cores.add((phys, val))
    except (OSError, ValueError):
        cores = set()
    return max(1, len(cores) or len(allowed))


def default_threads() -> int:
    """The command line's torch thread count: ``OMP_NUM_THREADS`` if the user set it, else 1."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else 1


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads and the BLAS pools of numpy and scipy to ``threads``.

    None: :func:`default_threads`. The BLAS pools (OpenBLAS, which also spins while it waits)
    are limited through ``threadpoolctl``; scipy's is loaded first so that it is limited too.
    Returns the count.
    """
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS, so that the limit below reaches it)
    import torch
    from threadpoolctl import threadpool_limits

    n = default_threads() if threads is None else int(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    threadpool_limits(limits=n, user_api="blas")
    return n


passive_wait_default()
