"""``geninv reproduce ...`` and ``geninv demo``: run the reproductions and write the report.

``geninv demo`` runs the quick versions of the paper's three reproductions (random sweep, MNIST,
inpainting with the random and the block mask), then of the noise and compressed-sensing
experiments, into ``results/quick/`` and writes the one-page ``results/index.html`` (and
``results/results.md``) with every figure and table. Each section ends with its claims, each
marked as the paper's or ours (where we go beyond the paper, or differ from it) and checked on
the records. A part whose ingredients are missing (e.g. the shipped MNIST generator) is skipped
with the reason printed and shown on the page.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geninv.exceptions import GenInvError, InputError
from geninv.experiments.records import atomic_write_text

__all__ = ["run_demo", "reproduce", "reproduce_noisy", "default_out", "RESULTS"]

RESULTS = Path("results")
_EXPERIMENTS = ("random", "mnist", "inpaint")


def default_out(experiment: str, *, mask: str = "random", quick: bool = False, root: Path = RESULTS) -> Path:
    """``results/<name>`` for a full run, ``results/quick/<name>`` for ``--quick``."""
    name = f"inpaint_{mask}" if experiment == "inpaint" else experiment
    return (root / "quick" / name) if quick else (root / name)


def _command(experiment: str, mask: str, quick: bool, out: Path, trials: int | None, seed: int,
             methods: Sequence[str] | None, missing: float) -> str:
    parts = ["geninv reproduce", experiment]
    if experiment == "inpaint":
        parts.append(f"--mask {mask}")
        if mask == "random" and missing != 0.45:
            parts.append(f"--missing {missing}")
    if quick:
        parts.append("--quick")
    if trials is not None:
        parts.append(f"--trials {trials}")
    if seed:
        parts.append(f"--seed {seed}")
    if methods:
        parts.append("--methods " + ",".join(methods))
    parts.append(f"--out {out}")
    return " ".join(parts)


def reproduce(
    experiment: str,
    *,
    mask: str = "random",
    quick: bool = False,
    out: str | Path | None = None,
    trials: int | None = None,
    seed: int = 0,
    methods: Sequence[str] | None = None,
    missing: float = 0.45,
    progress: bool = True,
    command: str | None = None,
    n1: str | Sequence[int] | None = None,
    output: str | None = None,
    executor: Any = None,
) -> dict[str, Any]:
    """Run (or resume) one reproduction; returns what its ``run_*`` function returns.

    Parameters
    ----------
    experiment : "random", "mnist" or "inpaint"
    trials : int, optional
        Trials per ``n_1`` (random) or number of images (mnist, inpaint); default from the mode.
    methods : sequence of str, optional
        Default: the paper's methods for that figure.
    n1 : sequence of int or comma-separated str, optional
        Random sweep only: the hidden widths (default: the mode's grid).
    output : str, optional
        Random sweep only: the generators' output activation (default tanh; e.g. ``"relu"``,
        whose records go to ``<out>_relu`` by default).
    executor : str or concurrent.futures.Executor, optional
        Where the trial units run: ``"serial"`` (default), ``"processes:N"``, ``"dask:local:N"``,
        ``"dask:ADDRESS"`` or an executor (see :mod:`geninv.experiments.executors`).
    """
    if experiment not in _EXPERIMENTS:
        raise InputError(f"experiment: expected one of {list(_EXPERIMENTS)}, received {experiment!r}")
    if mask not in ("random", "block"):
        raise InputError(f"mask: expected 'random' or 'block', received {mask!r}")
    if trials is not None and trials < 1:
        raise InputError(f"trials: expected a positive integer, received {trials}")
    widths: tuple[int, ...] | None = None
    if n1 is not None:
        if experiment != "random":
            raise InputError(f"n1: expected only with the random sweep, received it for {experiment!r}")
        try:
            widths = tuple(int(v) for v in (n1.split(",") if isinstance(n1, str) else n1))
        except ValueError:
            raise InputError(f"n1: expected comma-separated positive integers, received {n1!r}") from None
    if output is not None and experiment != "random":
        raise InputError(f"output: expected only with the random sweep, received it for {experiment!r}")
    out_dir = Path(out) if out is not None else default_out(experiment, mask=mask, quick=quick)
    if out is None and output not in (None, "tanh"):
        out_dir = out_dir.with_name(f"{out_dir.name}_{output}")
    cmd = command or _command(experiment, mask, quick, out_dir, trials, seed, methods, missing)
    if widths is not None and command is None:
        cmd = cmd.replace(" --out ", f" --n1 {','.join(map(str, widths))} --out ")
    if output is not None and command is None:
        cmd = cmd.replace(" --out ", f" --output {output} --out ")
    kw: dict[str, Any] = {"seed": seed}
    if output is not None:
        from geninv.model.activations import get_activation

        get_activation(output)  # InputError naming the activation if unknown
        kw["output"] = output
    if methods:
        kw["methods"] = tuple(methods)
    if experiment == "random":
        from geninv.experiments.random_sweep import RandomSweepConfig, run_random_sweep

        cfg = RandomSweepConfig.quick(**kw) if quick else RandomSweepConfig(**kw)
        if trials is not None:
            cfg.trials = trials
        if widths is not None:
            cfg.n1_values = widths
        runner: Any = lambda: run_random_sweep(cfg, out_dir, progress=progress, executor=executor)  # noqa: E731
    else:
        from geninv.experiments.inpaint import inpaint_config, run_inpaint
        from geninv.experiments.mnist_exp import ImageConfig, run_mnist

        if trials is not None:
            kw["images"] = trials
        if experiment == "mnist":
            icfg = ImageConfig.quick(**kw) if quick else ImageConfig(**kw)
            runner = lambda: run_mnist(icfg, out_dir, progress=progress, executor=executor)  # noqa: E731
        else:
            icfg = inpaint_config(mask, quick=quick, missing=missing, **kw)
            runner = lambda: run_inpaint(icfg, out_dir, progress=progress, executor=executor)  # noqa: E731
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    res = runner()
    atomic_write_text(out_dir / "command.txt", cmd + "\n")
    if res.get("summary") is not None:
        from geninv.experiments.report import write_summary

        res["summary"] = write_summary(out_dir, cmd)  # a second time, with the command recorded
    res["seconds"] = time.perf_counter() - t0
    res["command"] = cmd
    return res


def reproduce_noisy(
    experiment: str,
    *,
    quick: bool = False,
    out: str | Path | None = None,
    trials: int | None = None,
    seed: int = 0,
    methods: Sequence[str] | None = None,
    progress: bool = True,
    grid: str | None = None,
    results: str | Path = "results",
    executor: Any = None,
) -> int:
    """``geninv reproduce noise`` / ``geninv reproduce cs``: run (or resume), print where everything went.

    Parameters
    ----------
    experiment : "noise" or "cs"
    trials : int, optional
        Number of images (per input SNR, or per ``m``).
    grid : str, optional
        Comma-separated input SNRs in dB (noise) or numbers of measurements ``m`` (cs).
    executor : str or concurrent.futures.Executor, optional
        Where the units run (see :mod:`geninv.experiments.executors`).
    """
    from geninv.experiments.cs_exp import CSConfig, cs_summary, run_cs
    from geninv.experiments.noise_exp import NoiseConfig, noise_summary, run_noise

    if experiment not in ("noise", "cs"):
        raise InputError(f"experiment: expected 'noise' or 'cs', received {experiment!r}")
    if trials is not None and trials < 1:
        raise InputError(f"--trials: expected a positive integer, received {trials}")
    values: list[float] | None = None
    if grid is not None:
        try:
            values = [float(v) for v in grid.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"--grid: expected comma-separated numbers, received {grid!r}") from None
        if not values:
            raise InputError(f"--grid: expected comma-separated numbers, received {grid!r}")
    root = Path(results)
    out_dir = Path(out) if out is not None else ((root / "quick" / experiment) if quick else (root / experiment))
    parts = ["geninv reproduce", experiment] + (["--quick"] if quick else []) + (
        [f"--trials {trials}"] if trials is not None else []) + ([f"--seed {seed}"] if seed else []) + (
        ["--methods " + ",".join(methods)] if methods else []) + ([f"--grid {grid}"] if grid else []) + [f"--out {out_dir}"]
    command = " ".join(parts)
    kw: dict[str, Any] = {"seed": seed}
    if methods:
        kw["methods"] = tuple(methods)
    if trials is not None:
        kw["images"] = trials
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    if experiment == "noise":
        if values is not None:
            kw["snr_db"] = tuple(values)
        cfg = NoiseConfig.quick(**kw) if quick else NoiseConfig(**kw)
        res = run_noise(cfg, out_dir, progress=progress, executor=executor)
        atomic_write_text(out_dir / "command.txt", command + "\n")
        res["summary"] = noise_summary(out_dir, command, generator=res.get("generator"))
    else:
        if values is not None:
            kw["m_values"] = tuple(int(v) for v in values)
        ccfg = CSConfig.quick(**kw) if quick else CSConfig(**kw)
        res = run_cs(ccfg, out_dir, progress=progress, executor=executor)
        atomic_write_text(out_dir / "command.txt", command + "\n")
        res["summary"] = cs_summary(out_dir, command, success_db=ccfg.success_db, generator=res.get("generator"))
    print(f"records, figures and summary in {res['out']} ({res['ran']} trial units run, "
          f"{time.perf_counter() - t0:.1f} s; generator: {res.get('generator')})")
    for f in res["figures"]:
        print(f"  figure: {f}")
    print(f"  summary: {res['summary']}")
    _print_claims(out_dir)
    return 0


def _print_claims(out_dir: str | Path) -> None:
    """The checked claims of a summary: ``[verdict] (whose claim) claim: evidence``."""
    sj = Path(out_dir) / "summary.json"
    if sj.exists():
        for c in json.loads(sj.read_text())["claims"]:
            print(f"  [{c['verdict']}] ({c.get('whose', 'unmarked')}) {c['claim']}: {c['evidence']}")


def _print_result(res: dict[str, Any]) -> None:
    print(f"records, figures and summary in {res['out']} ({res['ran']} trial units run, {res['seconds']:.1f} s)")
    for s in res["skipped"]:
        print(f"  skipped: {s}")
    for f in res["figures"]:
        print(f"  figure: {f}")
    if res.get("summary"):
        print(f"  summary: {res['summary']}")
        _print_claims(res["out"])


def reproduce_cli(experiment: str, **kw: Any) -> int:
    """The ``geninv reproduce`` command (prints where everything went)."""
    if experiment == "report":
        root = Path(kw.get("out") or RESULTS)
        from geninv.experiments.registry import experiments

        rank = {e.name: e.rank for e in experiments()}
        dirs = sorted((p.parent for p in root.rglob("settings.json")), key=lambda d: (rank.get(d.name, 9), str(d)))
        if not dirs:
            raise InputError(f"out: expected reproduction directories under {root}, received none")
        page = _index(root, dirs, [])
        print(f"report: {page}")
        return 0
    res = reproduce(experiment, **kw)
    _print_result(res)
    return 0


def _index(root: Path, dirs: Sequence[Path], skipped: list[str]) -> Path:
    from geninv.experiments.report import write_index

    return write_index(root, list(dirs), skipped=skipped,
                       preamble="Quick versions unless the command says otherwise; every number below is "
                                "read from the records next to each figure.")


def run_demo(seed: int = 0, batch: int = 16, *, results: str | Path = RESULTS, progress: bool = True,
             experiments: Sequence[str] = (*_EXPERIMENTS, "noise", "cs"), executor: Any = None) -> int:
    """Quick versions of the reproductions (the paper's three, then noise and compressed sensing)
    and one page, ``results/index.html``.

    Parameters
    ----------
    seed : int
        Base seed of every trial.
    batch : int
        Number of images inverted in each MNIST experiment (clean, random mask, block mask).
    experiments : sequence of str
        A subset of ``("random", "mnist", "inpaint", "noise", "cs")`` (all by default; the last
        two are the noisy-signal and compressed-sensing experiments, quick versions).
    executor : str or concurrent.futures.Executor, optional
        Where every reproduction's units run (see :mod:`geninv.experiments.executors`).
    """
    from geninv.exceptions import InputError
    from geninv.experiments.common import mnist_status

    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"batch: expected a positive number of images, received {batch!r}")
    root = Path(results)
    t0 = time.perf_counter()
    dirs: list[Path] = []
    skipped: list[str] = []
    plan: list[tuple[str, str]] = [("random", "random")] if "random" in experiments else []
    image_plan = ([("mnist", "random")] if "mnist" in experiments else []) + (
        [("inpaint", "random"), ("inpaint", "block")] if "inpaint" in experiments else [])
    st = mnist_status() if image_plan else None
    if st is not None and st.available:
        plan += image_plan
    elif st is not None:
        msg = f"MNIST experiments (clean and inpainting) skipped: {st.reason}"
        print(msg, file=sys.stderr)
        skipped.append(msg)
    for exp, mask in plan:
        out = default_out(exp, mask=mask, quick=True, root=root)
        name = exp if exp != "inpaint" else f"inpaint --mask {mask}"
        print(f"== geninv reproduce {name} --quick", file=sys.stderr)
        try:
            res = reproduce(exp, mask=mask, quick=True, out=out, seed=seed,
                            trials=batch if exp != "random" else None, progress=progress, executor=executor)
        except GenInvError as e:
            msg = f"{name} skipped: {e}"
            print(msg, file=sys.stderr)
            skipped.append(msg)
            continue
        skipped += [f"{name}: method {s}" for s in res["skipped"]]
        _print_result(res)
        dirs.append(out)
    for exp in ("noise", "cs"):
        if exp not in experiments:
            continue
        print(f"== geninv reproduce {exp} --quick", file=sys.stderr)
        try:
            reproduce_noisy(exp, quick=True, seed=seed, progress=progress, results=root, executor=executor)
        except GenInvError as e:
            msg = f"{exp} skipped: {e}"
            print(msg, file=sys.stderr)
            skipped.append(msg)
            continue
        dirs.append(root / "quick" / exp)
    page = _index(root, dirs, skipped)
    from geninv.experiments.report import section

    for d in dirs:
        sec = section(d)
        print(f"\n## {sec.title}\n")
        print(sec.tables[0].to_md())
    print(f"\none-page report: {page} ({time.perf_counter() - t0:.0f} s in all)")
    return 0
