"""The trial loop of the reproductions: units of work run on an executor, records written by the driver alone.

A reproduction is a list of :class:`Unit` (each writes a fixed set of record keys) and a
module-level trial function ``work(unit, missing_keys) -> UnitResult``. :func:`run_units` submits
every unit that still has missing keys to an executor (see :mod:`geninv.experiments.executors`),
and appends each finished unit's records to the store (one durable write) as it comes back, so a
crash of the driver or of a worker loses at most the units in flight and the next run computes
exactly the missing keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from geninv.exceptions import GenInvError

__all__ = ["Unit", "UnitResult", "Store", "run_task", "run_units", "iter_chunks"]


class Store(Protocol):
    """What the driver needs of a record store (:class:`geninv.experiments.records.RecordStore`)."""

    def missing(self, keys: Sequence[str]) -> list[str]: ...

    def stamp(self, record: dict[str, Any]) -> dict[str, Any]: ...

    def append(self, records: Sequence[dict[str, Any]]) -> None: ...

    def log_error(self, key: str, message: str) -> None: ...


@dataclass(frozen=True)
class Unit:
    """One resumable piece of work: it writes the records ``keys`` (all at once)."""

    name: str
    keys: tuple[str, ...]
    payload: Any = None


@dataclass
class UnitResult:
    """What one trial unit hands back to the driver.

    Attributes
    ----------
    records : list of dict
        The finished records (each with its ``"key"``).
    errors : list of (key, message)
        Trials whose method raised; the driver logs them in ``errors.jsonl`` and they stay
        missing, so the next run retries them.
    """

    records: list[dict[str, Any]]
    errors: list[tuple[str, str]] = field(default_factory=list)


def run_task(work: Callable[[Unit, list[str]], Any], unit: Unit, keys: list[str], threads: int) -> UnitResult:
    """Run one unit where the executor put it: pin the torch threads, call ``work``, stamp ``"threads"``.

    A module-level function, so that process and Dask executors can pickle it by name.
    """
    import torch

    from geninv.experiments.executors import pin_threads

    pin_threads(threads)
    out = work(unit, keys)
    res = out if isinstance(out, UnitResult) else UnitResult(list(out))
    n = torch.get_num_threads()
    for r in res.records:
        r["threads"] = n
    return res


def _write_unit(store: Store, res: UnitResult) -> None:
    import sys

    from tqdm.auto import tqdm

    store.append([store.stamp(r) for r in res.records])
    for key, msg in res.errors:
        store.log_error(key, msg)
        tqdm.write(f"{key}: {msg}", file=sys.stderr)


def run_units(
    store: Store,
    units: Sequence[Unit],
    work: Callable[[Unit, list[str]], list[dict[str, Any]] | UnitResult],
    *,
    executor: Any = None,
    threads: int | None = None,
    progress: bool = True,
    desc: str = "trials",
    max_units: int | None = None,
    callback: Callable[[Unit, int], None] | None = None,
    restarts: int = 3,
) -> int:
    """Run every unit that still has missing records on an executor; return how many units ran.

    The driver (this function) alone writes the record store: each finished unit's records are
    appended (one durable write) as soon as it comes back, so a crash of the driver or of a
    worker loses at most the units in flight, and the next run computes exactly the missing keys.

    Parameters
    ----------
    work : callable ``(unit, missing_keys) -> records or UnitResult``
        Computes the records of ``missing_keys`` (a subset of ``unit.keys``). It may return
        fewer (a method that is unavailable or raised); those stay missing. For process and
        Dask executors it must pickle by reference: a module-level function, or
        ``functools.partial`` of one with a small config.
    executor : str, concurrent.futures.Executor, Pool or None
        See :func:`geninv.experiments.executors.open_executor` (None: serial, in this process).
    threads : int, optional
        Torch threads per worker (stamped on every record as ``"threads"``).
    max_units : int, optional
        Submit at most this many units (used to test resuming).
    callback : callable ``(unit, n_run)``, optional
        Called after each unit's records are on disk (tests raise ``KeyboardInterrupt`` here).
    restarts : int
        How many times a local process pool whose worker died is rebuilt; the units it had in
        flight are submitted again (nothing of theirs was recorded).
    """
    import contextlib
    import sys
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    import torch
    from tqdm.auto import tqdm

    from geninv.experiments.executors import Pool, open_executor

    todo = [u for u in units if store.missing(u.keys)]
    if max_units is not None:
        todo = todo[:max(0, max_units)]
    n_run = 0
    bar = tqdm(total=len(units), initial=len(units) - len([u for u in units if store.missing(u.keys)]), desc=desc,
               unit="trial", disable=not progress, dynamic_ncols=True, leave=True)
    driver_threads = torch.get_num_threads()
    pending: dict[Any, Unit] = {}
    with contextlib.ExitStack() as stack:
        pool = executor if isinstance(executor, Pool) else stack.enter_context(open_executor(executor, threads=threads))
        window = 1 if pool.spec == "serial" else 2 * pool.workers
        queue = deque(todo)
        lost = 0
        try:
            while queue or pending:
                submit_broken = False
                while queue and len(pending) < window:
                    u = queue.popleft()
                    try:
                        pending[pool.executor.submit(run_task, work, u, store.missing(u.keys), pool.threads)] = u
                    except BrokenProcessPool:  # a worker died between two submissions
                        queue.appendleft(u)
                        submit_broken = True
                        break
                done = wait(list(pending), return_when=FIRST_COMPLETED)[0] if pending else set()
                broken: list[Unit] = []
                for fut in [f for f in pending if f in done]:
                    u = pending.pop(fut)
                    try:
                        res = fut.result()
                    except BrokenProcessPool:
                        broken.append(u)
                        continue
                    _write_unit(store, res)
                    n_run += 1
                    bar.update(1)
                    if callback is not None:
                        callback(u, n_run)
                if broken or submit_broken:
                    # A worker died (killed, out of memory): every unit in flight is lost. Keep
                    # what finished, rebuild the pool, and submit the lost units again first.
                    for fut, u in list(pending.items()):
                        if fut.done() and fut.exception() is None:
                            _write_unit(store, fut.result())
                            n_run += 1
                            bar.update(1)
                        else:
                            broken.append(u)
                    pending.clear()
                    if pool.restart is None or lost >= restarts:
                        raise GenInvError(
                            f"executor: a worker of {pool.spec} died ({len(broken)} units in flight were lost, "
                            f"{n_run} finished units are recorded); run the same command again to resume")
                    lost += 1
                    tqdm.write(f"a worker of {pool.spec} died; restarting the pool and running its "
                               f"{len(broken)} units again", file=sys.stderr)
                    pool.executor = pool.restart()
                    order = {u.name: i for i, u in enumerate(todo)}
                    queue.extendleft(sorted(broken, key=lambda u: order[u.name], reverse=True))
        finally:
            for fut in pending:
                fut.cancel()
            bar.close()
            if torch.get_num_threads() != driver_threads:
                torch.set_num_threads(driver_threads)
    return n_run


def iter_chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of fixed chunks of ``range(n)``; a chunk's content never depends on ``n``'s history."""
    for s in range(0, n, size):
        yield s, min(n, s + size)
