"""Where the trial units of a reproduction run: in the driver, in local processes, or on Dask.

Every reproduction takes an executor. On the command line it is a string,

``serial``
    Every unit in the driver process, one after the other.
``processes:N``
    ``N`` local worker processes (:class:`concurrent.futures.ProcessPoolExecutor`, started
    with ``spawn``, so workers inherit no open file and no lock of the driver).
``dask:local:N``
    A Dask ``LocalCluster`` of ``N`` worker processes (one thread each) started for the run.
``dask:ADDRESS``
    The Dask scheduler at ``ADDRESS`` (e.g. ``tcp://10.0.0.5:8786``), through
    ``Client.get_executor()``.

In the API any :class:`concurrent.futures.Executor` may be passed instead. Dask is an optional
extra (``pip install geninv[dask]``).

A task is ``(trial function, config, unit, keys, threads)``: a module-level function and small
objects, so nothing that grows with the record store is pickled. The driver alone writes the
records (see :func:`geninv.experiments.records.run_units`).

Thread count: a worker pins ``torch.set_num_threads(threads)`` before each unit and every record
carries ``"threads"``. Reductions in torch's CPU kernels split work by thread, so results are
reproducible to the last bit only at a fixed thread count; records made at the same count on any
executor are identical to a serial run's.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from geninv.exceptions import InputError

__all__ = ["ExecutorSpec", "SerialExecutor", "Pool", "parse_executor", "open_executor", "pin_threads",
           "EXECUTOR_HELP"]

EXECUTOR_HELP = ("where the trial units run: 'serial' (default), 'processes:N' (N local processes), "
                 "'dask:local:N' (a Dask LocalCluster of N processes) or 'dask:ADDRESS' (a running Dask scheduler)")


@dataclass(frozen=True)
class ExecutorSpec:
    """A parsed ``--executor`` value.

    Attributes
    ----------
    kind : "serial", "processes" or "dask"
    workers : int or None
        Number of processes (``processes:N``, ``dask:local:N``); None for ``serial`` and a
        remote scheduler.
    address : str or None
        The scheduler address of ``dask:ADDRESS``; None otherwise.
    """

    kind: str
    workers: int | None = None
    address: str | None = None

    def __str__(self) -> str:
        if self.kind == "serial":
            return "serial"
        if self.kind == "processes":
            return f"processes:{self.workers}"
        return f"dask:{self.address}" if self.address is not None else f"dask:local:{self.workers}"


def _count(text: str, spec: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise InputError(f"--executor: expected a positive number of workers in {spec!r}, received {text!r}")
    return n


def parse_executor(spec: str | None) -> ExecutorSpec:
    """Parse ``serial | processes:N | dask:local:N | dask:ADDRESS`` (None means ``serial``).

    Raises
    ------
    InputError
        Naming ``--executor``, the accepted forms and the value received.

    Examples
    --------
    >>> parse_executor("processes:4")
    ExecutorSpec(kind='processes', workers=4, address=None)
    >>> str(parse_executor("dask:local:2"))
    'dask:local:2'
    """
    if spec is None:
        return ExecutorSpec("serial")
    text = str(spec).strip()
    if text == "serial":
        return ExecutorSpec("serial")
    kind, sep, rest = text.partition(":")
    if kind == "processes" and sep:
        return ExecutorSpec("processes", workers=_count(rest, text))
    if kind == "dask" and rest:
        if rest.startswith("local:"):
            return ExecutorSpec("dask", workers=_count(rest[len("local:"):], text))
        if rest == "local":
            raise InputError(f"--executor: expected 'dask:local:N' with a number of workers N, received {text!r}")
        return ExecutorSpec("dask", address=rest)
    raise InputError(f"--executor: expected 'serial', 'processes:N', 'dask:local:N' or 'dask:ADDRESS', received {text!r}")


class SerialExecutor(Executor):
    """A :class:`concurrent.futures.Executor` that runs each call at once, in the calling process."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        f: Future[Any] = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - handed to the caller through the future
            if isinstance(e, KeyboardInterrupt | SystemExit):
                raise
            f.set_exception(e)
        return f


@dataclass
class Pool:
    """An executor opened for one run.

    Attributes
    ----------
    executor : concurrent.futures.Executor
    spec : str
        What it is, for messages and records (``"processes:2"``, ``"given"``...).
    workers : int
        Units run at the same time (the driver keeps about twice as many submitted).
    threads : int
        Torch threads each worker pins before each unit.
    restart : callable or None
        Builds a fresh executor after a worker died (local process pools); None when the
        engine replaces dead workers itself (Dask) or cannot.
    """

    executor: Executor
    spec: str
    workers: int
    threads: int
    restart: Callable[[], Executor] | None = None


def pin_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)`` unless already so (called in each worker before each unit)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _default_threads(workers: int) -> int:
    """Torch threads per worker: the driver's count shared among the workers (at least one)."""
    import torch

    return max(1, torch.get_num_threads() // max(1, workers))


def _process_pool(workers: int, threads: int) -> ProcessPoolExecutor:
    # A fork server is a fresh process (it inherits no file or lock of the driver) that imports
    # torch and geninv once; each worker, including one replacing a dead worker, is a fork of it
    # made before any torch thread pool starts, so it starts in milliseconds instead of seconds.
    ctx: Any
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "geninv", "geninv.experiments.records"])
    else:  # pragma: no cover - not POSIX
        ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=pin_threads, initargs=(threads,))


def _need_dask() -> Any:
    try:
        import distributed
    except ImportError as e:
        raise InputError(
            f"--executor: a dask executor needs the optional packages dask and distributed ({e}); install them with "
            "`pip install geninv[dask]` (or `pip install dask distributed`), or use 'processes:N'"
        ) from None
    return distributed


@contextlib.contextmanager
def open_executor(executor: str | ExecutorSpec | Executor | None = None, *,
                  threads: int | None = None) -> Iterator[Pool]:
    """Open the executor of a run and close what was started for it on exit.

    Parameters
    ----------
    executor : str, ExecutorSpec, concurrent.futures.Executor or None
        A spec string (see the module docstring), or an executor the caller owns (left open on
        exit; e.g. ``distributed.Client(...).get_executor()``); None means ``serial``.
    threads : int, optional
        Torch threads per worker. Default: the driver's ``torch.get_num_threads()`` for
        ``serial`` and a given executor, that count divided by the number of workers for local
        pools, and 1 for a remote Dask scheduler.

    Yields
    ------
    Pool
    """
    if isinstance(executor, Executor):
        import torch

        n = getattr(executor, "_max_workers", None) or 1
        client = getattr(executor, "_client", None)  # Dask's Client.get_executor()
        if client is not None:
            with contextlib.suppress(Exception):
                n = max(1, sum(client.nthreads().values()))
        yield Pool(executor, "given", int(n), threads or torch.get_num_threads())
        return
    spec = executor if isinstance(executor, ExecutorSpec) else parse_executor(executor)
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise InputError(f"threads: expected a positive number of torch threads per worker, received {threads!r}")
    if spec.kind == "serial":
        import torch

        yield Pool(SerialExecutor(), "serial", 1, threads or torch.get_num_threads())
        return
    if spec.kind == "processes":
        w = int(spec.workers or 1)
        t = threads or _default_threads(w)
        box = [_process_pool(w, t)]

        def restart() -> Executor:
            box[0].shutdown(wait=False, cancel_futures=True)
            box[0] = _process_pool(w, t)
            return box[0]

        try:
            yield Pool(box[0], str(spec), w, t, restart)
        finally:
            box[0].shutdown(wait=True, cancel_futures=True)
        return
    distributed = _need_dask()
    if spec.address is None:
        w = int(spec.workers or 1)
        t = threads or _default_threads(w)
        cluster = distributed.LocalCluster(n_workers=w, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=40)
        client = distributed.Client(cluster)
        try:
            yield Pool(client.get_executor(), str(spec), w, t)
        finally:
            client.close()
            cluster.close()
        return
    try:
        client = distributed.Client(spec.address, timeout=30)
    except OSError as e:
        raise InputError(f"--executor: expected a reachable Dask scheduler at {spec.address!r}, received an error "
                         f"({e})") from None
    try:
        w = max(1, sum(client.nthreads().values()))
        yield Pool(client.get_executor(), str(spec), w, threads or 1)
    finally:
        client.close()

