"""What the benchmark knows about the machine: load, processor, threads, GPU, memory, and the
measured matrix-multiply and memory-bandwidth peaks that the solvers' throughput is compared with.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "load_average",
    "wait_for_load",
    "machine_info",
    "matmul_gflops",
    "matmul_peak",
    "bandwidth_gbs",
    "rss_mb",
    "reset_peak_rss",
    "max_rss_mb",
    "synchronize",
]


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS does not report them)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return None


def wait_for_load(below: float, *, max_wait: float, poll: float = 15.0, log: Any = None) -> tuple[bool, float]:
    """Wait until the 1-minute load average is below ``below`` (at most ``max_wait`` seconds).

    Returns (reached, seconds waited).
    """
    t0 = time.perf_counter()
    while True:
        la = load_average()
        if la is None or la[0] < below:
            return True, time.perf_counter() - t0
        waited = time.perf_counter() - t0
        if waited >= max_wait:
            return False, waited
        if log is not None:
            log(f"load average {la[0]:.2f} >= {below}: waiting ({waited:.0f} s of at most {max_wait:.0f} s)")
        time.sleep(min(poll, max(max_wait - waited, 0.1)))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "unknown"


def machine_info(device: str) -> dict[str, Any]:
    """Processor, cores, torch threads and build, GPU (or why there is none)."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)(),
        "mkl": bool(torch.backends.mkl.is_available()),
        "device": device,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    else:
        info["gpu"] = None
        info["gpu_note"] = "no GPU lent: CPU numbers only"
    return info


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work (timings on CUDA are meaningless without it); no-op on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(
    m: int,
    k: int,
    n: int,
    *,
    transpose_b: bool = False,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    min_time: float = 0.2,
    repeats: int = 5,
) -> float:
    """Best-of-``repeats`` throughput of ``(m, k) @ (k, n)`` in GFLOP/s (``2 m k n`` per product).

    ``transpose_b``: the right factor is a transposed view of an ``(n, k)`` matrix, as in the
    solvers' ``x @ W.T``. Each repeat runs the product enough times to last ``min_time``.
    """
    gen = torch.Generator(device="cpu")
    gen.manual_seed(0)
    a = torch.randn(m, k, generator=gen, dtype=dtype).to(device)
    b = torch.randn(n, k, generator=gen, dtype=dtype).to(device).T if transpose_b else torch.randn(k, n, generator=gen, dtype=dtype).to(device)
    out = torch.empty(m, n, dtype=dtype, device=device)
    torch.mm(a, b, out=out)
    synchronize(device)
    t = time.perf_counter()
    torch.mm(a, b, out=out)
    synchronize(device)
    one = max(time.perf_counter() - t, 1e-7)
    inner = max(1, min(10_000, int(min_time / one)))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b, out=out)
        synchronize(device)
        best = min(best, (time.perf_counter() - t) / inner)
    return 2.0 * m * k * n / best / 1e9


def matmul_peak(
    shapes: Mapping[str, Sequence[tuple[int, int, int, bool]]] | None = None,
    *,
    square: Sequence[int] = (1024, 2048, 3072),
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    min_time: float = 0.2,
) -> dict[str, Any]:
    """Measured fp32 matrix-multiply throughput: large square products, and the given shapes.

    Parameters
    ----------
    shapes : dict of name -> list of (m, k, n, transpose_b)
        E.g. the solvers' products for each generator at a batch size.
    square : sizes of the square products; the peak is the best of them.

    Returns
    -------
    dict with ``square`` ({size: GFLOP/s}), ``peak_gflops`` (best square), and ``shapes``
    ({name: [{"m", "k", "n", "transpose_b", "gflops"}]}).
    """
    sq = {str(s): matmul_gflops(s, s, s, dtype=dtype, device=device, min_time=min_time) for s in square}
    out: dict[str, Any] = {"dtype": str(dtype).replace("torch.", ""), "square": sq,
                           "peak_gflops": max(sq.values()) if sq else None, "load_average": load_average()}
    if shapes:
        out["shapes"] = {
            name: [{"m": m, "k": k, "n": n, "transpose_b": tb,
                    "gflops": matmul_gflops(m, k, n, transpose_b=tb, dtype=dtype, device=device, min_time=min_time)}
                   for (m, k, n, tb) in lst]
            for name, lst in shapes.items()
        }
    return out


def bandwidth_gbs(*, n: int = 1 << 25, dtype: torch.dtype = torch.float32, device: str = "cpu", repeats: int = 5) -> float:
    """Memory bandwidth of ``c = a + b`` on vectors far larger than the caches (GB/s, 3 streams)."""
    a = torch.ones(n, dtype=dtype, device=device)
    b = torch.ones(n, dtype=dtype, device=device)
    c = torch.empty(n, dtype=dtype, device=device)
    torch.add(a, b, out=c)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        t = time.perf_counter()
        torch.add(a, b, out=c)
        synchronize(device)
        best = min(best, time.perf_counter() - t)
    return 3 * n * a.element_size() / best / 1e9


def rss_mb() -> float | None:
    """Current resident set size of this process (MB), from /proc (None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):  # pragma: no cover
        return None


def reset_peak_rss() -> bool:
    """Reset this process's resident-memory high-water mark to its current RSS (Linux:
    ``/proc/self/clear_refs`` <- 5), so the next :func:`max_rss_mb` is the peak of what runs
    after it, not of the imports before. Returns False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def max_rss_mb() -> float:
    """High-water resident set size of this process (MB): ``VmHWM`` from /proc (which
    :func:`reset_peak_rss` resets), else ``ru_maxrss``. Not ``ru_maxrss`` first: after fork and
    exec it also holds the parent's high-water mark."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except (OSError, ValueError, IndexError):  # pragma: no cover
        pass
    v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return v / 2**20 if sys.platform == "darwin" else v / 2**10
