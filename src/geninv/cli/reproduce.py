"""``geninv demo`` and ``geninv reproduce``: the paper's experiments, their records and figures."""

from __future__ import annotations

import argparse

from geninv.cli.common import add_runtime


def register_demo(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``geninv demo`` (its flags and its handler) to ``sub``."""
    p = sub.add_parser("demo", help="quick versions of all reproductions and a one-page results/index.html")
    p.add_argument("--seed", type=int, default=0, help="base seed of every trial (default 0)")
    p.add_argument("--batch", type=int, default=16, help="images per MNIST experiment (default 16)")
    add_runtime(p, cpu_only=True)

    def run(a: argparse.Namespace) -> int:
        from geninv.experiments.demo import run_demo

        return run_demo(seed=a.seed, batch=a.batch)

    p.set_defaults(func=run, interrupted="finished trials are kept under results/quick; rerun to resume",
                   flag_names={"batch": "--batch", "seed": "--seed"})


# Which reproductions use which flag (a flag given to one that does not use it is refused).
_REPRODUCE_FLAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mask": ("--mask", ("inpaint",)),
    "missing": ("--missing", ("inpaint",)),
    "n1": ("--n1", ("random",)),
    "output": ("--output", ("random",)),
    "grid": ("--grid", ("noise", "cs")),
    "phase": ("--phase", ("phase",)),
    "quick": ("--quick", ("random", "mnist", "inpaint", "noise", "cs", "phase", "conv")),
    "trials": ("--trials", ("random", "mnist", "inpaint", "noise", "cs", "phase", "conv")),
    "seed": ("--seed", ("random", "mnist", "inpaint", "noise", "cs", "phase", "conv")),
    "methods": ("--methods", ("random", "mnist", "inpaint", "noise", "cs", "phase", "conv")),
    "no_progress": ("--no-progress", ("random", "mnist", "inpaint", "noise", "cs", "phase", "conv")),
    "executor": ("--executor", ("random", "mnist", "inpaint", "noise", "cs", "phase")),
}


_DESCRIPTION = ("Run (or resume) one reproduction: random (the paper's Fig. 4, random generators), mnist "
                "(Fig. 5-7, the trained MNIST generator), inpaint (Fig. 8-13, missing pixels, --mask random or "
                "block), noise (noisy signals: Theorem 2's bound and noise-aware inversion, beyond the paper's "
                "figures), cs (compressed sensing y = A G(z), beyond the paper's figures), phase (phase diagrams "
                "of recovery over a grid of widths and measurements, --phase), conv (the shipped convolutional "
                "generators: Corollary 1 per layer, clean and inpainting); 'report' rebuilds index.html from the "
                "directories under --out.")


def register_reproduce(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``geninv reproduce`` (its flags and its handler) to ``sub``."""
    p = sub.add_parser("reproduce", description=_DESCRIPTION,
                       help="reproduce the paper's experiments: records, figures and summary (resumable)")
    p.add_argument("experiment", choices=["random", "mnist", "inpaint", "noise", "cs", "phase", "conv", "report"],
                   help="random, mnist, inpaint, noise, cs, phase, conv or report")
    p.add_argument("--mask", choices=["random", "block"], default=None, help="inpaint: which mask (default random)")
    p.add_argument("--missing", type=float, default=None,
                   help="inpaint --mask random: fraction of hidden pixels (default 0.45)")
    p.add_argument("--quick", action="store_true", help="small grid, about a minute on 2 CPU cores")
    p.add_argument("--out", default=None, help="output directory (default results/[quick/]NAME)")
    p.add_argument("--trials", type=int, default=None, help="trials per n_1 (random), per grid cell (phase) or images (mnist, inpaint, noise, cs)")
    p.add_argument("--seed", type=int, default=None, help="base seed of the trials (default 0)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: the paper's)")
    p.add_argument("--n1", default=None, help="random: comma-separated hidden widths (default: the mode's grid)")
    p.add_argument("--output", default=None, help="random: output activation of the generators (default tanh; e.g. relu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--grid", default=None, help="noise: comma-separated input SNRs [dB]; cs: comma-separated m")
    from geninv.experiments.executors import EXECUTOR_HELP, parse_executor
    from geninv.experiments.phase import PHASE_HELP

    p.add_argument("--executor", default=None, help=EXECUTOR_HELP)
    p.add_argument("--phase", default=None, help=PHASE_HELP)
    add_runtime(p, cpu_only=True)

    def run(a: argparse.Namespace) -> int:
        from geninv.exceptions import InputError
        from geninv.experiments.demo import reproduce_cli, reproduce_noisy

        for dest, (flag, users) in _REPRODUCE_FLAGS.items():
            value = getattr(a, dest, None)
            if value not in (None, False) and a.experiment not in users:
                raise InputError(f"{flag}: not used by 'reproduce {a.experiment}' (only by {', '.join(users)}), "
                                 f"received {flag} {value if value is not True else ''}".rstrip())
        if a.missing is not None and a.mask == "block":
            raise InputError("--missing: not used with --mask block (the block mask hides the upper rows)")
        if a.trials is not None and a.trials < 1:
            raise InputError(f"--trials: expected a positive integer, received {a.trials}")
        if a.grid is not None:
            _check_grid(a.grid, a.experiment)
        seed = 0 if a.seed is None else a.seed
        methods = None if a.methods is None else [m.strip() for m in a.methods.split(",") if m.strip()]
        if methods == []:
            raise InputError(f"--methods: expected comma-separated method names, received {a.methods!r}")
        ex = str(parse_executor(a.executor or "serial"))
        if a.experiment == "phase":
            from geninv.experiments.phase import parse_phase, reproduce_phase

            try:  # the diagram's own settings, before any work
                parse_phase(a.phase, quick=a.quick)
            except InputError as e:
                raise InputError(str(e) if str(e).startswith("--phase") else f"--phase: {e}") from None
            return reproduce_phase(a.phase, quick=a.quick, out=a.out, trials=a.trials, seed=seed, methods=methods,
                                   progress=not a.no_progress, executor=ex)
        if a.experiment in ("noise", "cs"):
            return reproduce_noisy(a.experiment, quick=a.quick, out=a.out, trials=a.trials, seed=seed,
                                   methods=methods, progress=not a.no_progress, grid=a.grid, executor=ex)
        if a.experiment == "conv":  # the shipped convolutional generators
            from geninv.experiments.conv_exp import reproduce_conv

            return reproduce_conv(quick=a.quick, out=a.out, trials=a.trials, seed=seed, methods=methods,
                                  progress=not a.no_progress)
        if a.experiment == "report":
            return reproduce_cli("report", out=a.out)
        return reproduce_cli(a.experiment, mask=a.mask or "random", quick=a.quick, out=a.out, trials=a.trials,
                             seed=seed, methods=methods, missing=0.45 if a.missing is None else a.missing,
                             progress=not a.no_progress, n1=a.n1, executor=ex,
                             **({"output": a.output} if a.output is not None else {}))

    p.set_defaults(func=run, interrupted="finished trials are kept in the records under --out; rerun to resume",
                   flag_names={"trials": "--trials", "seed": "--seed", "methods": "--methods", "n1": "--n1",
                               "n1_values": "--n1", "activation": "--output", "grid": "--grid", "m_values": "--grid",
                               "missing": "--missing", "out": "--out", "out_dir": "--out"})


def _check_grid(text: str, experiment: str) -> None:
    """``--grid`` before any work: finite input SNRs in dB (noise) or positive numbers of measurements (cs)."""
    import math

    from geninv.exceptions import InputError

    what = "finite input SNRs in dB" if experiment == "noise" else "positive integers (numbers of measurements m)"
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    ok = bool(values) and all(math.isfinite(v) for v in values)
    if experiment == "cs":
        ok = ok and all(v >= 1 and v == int(v) for v in values)
    if not ok:
        raise InputError(f"--grid: expected comma-separated {what}, received {text!r}")

