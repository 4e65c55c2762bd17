"""The benchmark harness (geninv.bench): FLOP counts by hand and against torch's counter, and a
smoke run of the whole harness in a tiny mode. No timing is asserted anywhere: the numbers are
only checked to be present, finite and positive."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import geninv
from geninv.bench import BenchConfig, run_bench
from geninv.bench.flops import (
    count_matmul_flops,
    fista_stage_flops,
    gradient_flops,
    ladmm_stage_flops,
    loop_flops,
    matmul_flops,
    network_flops,
    supported_lstsq_flops,
)
from geninv.bench.worker import MARKER, run_task
from geninv.cli import main

TINY = {"label": "tiny", "dims": [3, 12, 30], "output": "plu", "seed": 0, "bias": True}


def _strict(text: str) -> object:
    def bad(c: str) -> None:
        raise AssertionError(f"non-finite number {c} in strict JSON")

    return json.loads(text, parse_constant=bad)


# -- FLOP counts ----------------------------------------------------------------------------------


def test_flop_counts_by_hand() -> None:
    # A tiny problem counted on paper: W of shape (n_out, n_in) = (4, 3), one product of one sample
    # is 2 * 3 * 4 = 24 FLOPs.
    assert matmul_flops(5, 3, 4) == 120
    assert network_flops([2, 3, 4]) == 2 * 2 * 3 + 2 * 3 * 4 == 36
    # FISTA, two samples running 3 and 5 iterations, a check every 2: 2 products per iteration
    # (8 iterations: 384), 1 per check (2 + 3 checks: 120), the auto lam gradient (2 x 2 products: 96).
    f = fista_stage_flops(3, 4, torch.tensor([3, 5]), check_every=2, auto_lam=True)
    assert (f["iterations"], f["setup"], f["total"]) == (384 + 120, 96, 600)
    # Linearized ADMM on W (3, 2) (one product 12): 10 iterations x 2 products = 240; setup per
    # sample: W x0 + b and the lam gradient (2 x 12); warm start on different rows, masked full
    # Gram matrices: (1 x 3) @ (3 x 4) = 24 per sample, right-hand side 12, 2 refinements x 24.
    rows = torch.tensor([[True, True, False], [True, False, False]])
    a = ladmm_stage_flops(2, 3, torch.tensor([4, 6]), rows, auto_lam=True, refine=2)
    assert (a["iterations"], a["setup"]) == (240, 48 + 2 * (24 + 12 + 48))
    # ... or, past the memory budget, gathered (2 and 1 rows padded to r = 2): Gram 2*2*2*2 = 16,
    # right-hand side 8, 2 refinements x 16: 56 per sample.
    assert supported_lstsq_flops(2, 3, 2, rows, refine=2, budget=0) == 2 * 56
    # Same rows for every sample: one W^T diag(s) W (2*2*3*2 = 24) and 1 + 2*2 products per sample.
    same = torch.tensor([[True, True, False], [True, True, False]])
    assert ladmm_stage_flops(2, 3, torch.tensor([4, 6]), same, auto_lam=False, refine=2)["setup"] == 2 * 12 + 24 + 2 * 5 * 12
    # gd on [2, 3, 4], 10 iterations: a gradient is 2 x 36; setup = Lipschitz (36 + 20 x 72) +
    # first gradient (72) + final hidden layers (2*2*3 = 12).
    g = gradient_flops([2, 3, 4], torch.tensor([10]), method="gd")
    assert (g["iterations"], g["setup"]) == (720, 36 + 1440 + 72 + 12)


@pytest.mark.parametrize(
    "method, options",
    [
        ("latent_pursuit", {"debias": False}),
        ("layered_bp", {"debias": False}),
        ("gd", {"max_iter": 40}),
        ("adam", {"max_iter": 40, "restarts": 2}),
    ],
)
def test_loop_flops_equal_torch_flop_counter(method: str, options: dict) -> None:
    # The analytic model must account for every matrix product the solver dispatches (without
    # debiasing, the loops are the whole call). Tolerance 2 %: the iterations are counted exactly
    # (a product missed per iteration would be off by 30 % or more), while the one-off warm-start
    # least squares' refinement count is a tunable of the solver that the model may lag behind.
    G = geninv.random_generator(TINY["dims"], output="plu", seed=0, bias=True)
    _, y = G.sample(5, seed=1)
    if method in ("latent_pursuit", "layered_bp"):
        # the exact form: without noise_level, invert first tests per sample whether the image
        # layer fits exactly (one least-squares fit outside the loops this model counts)
        options = dict(options, noise_level=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", geninv.ConvergenceWarning)
        geninv.invert(G, y, method=method, **options)  # warm the cached spectral norms
        counted, res = count_matmul_flops(lambda: geninv.invert(G, y, method=method, **options))
    model = loop_flops(method, G.dims, res, options)
    assert model is not None
    assert model["total"] == pytest.approx(counted, rel=0.02), (
        f"geninv.bench.flops no longer matches {method}'s products ({model['total']} vs {counted}): "
        "update the FLOP model to the solver's iteration"
    )


# -- the harness ----------------------------------------------------------------------------------


def _tiny_config(out: Path, **kw: object) -> BenchConfig:
    base = dict(out=str(out), batches=[1, 4], methods=["latent_pursuit", "gd", "oracle"], generators=[TINY],
                curve_batch=4, cold_batch=6, isolate=False, profile=False, peak_square=[64], peak_min_time=0.001,
                min_time=0.0, max_repeats=1, budget=1e9, command="pytest tiny")
    base.update(kw)
    return BenchConfig(**base)  # type: ignore[arg-type]


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_harness_tiny_mode_writes_complete_results(tmp_path: Path) -> None:
    run_bench(_tiny_config(tmp_path), log_stream=None)
    bench = _strict((tmp_path / "bench.json").read_text())
    assert isinstance(bench, dict)
    for key in ("machine", "load_average", "generators", "peak", "throughput", "time_to_target", "cold", "targets"):
        assert key in bench
    assert _positive(bench["peak"]["peak_gflops"]) and _positive(bench["peak"]["start"]["bandwidth_gbs"])
    assert len(bench["load_average"]["start"]) == 3
    thr = bench["throughput"]
    assert {(r["method"], r["batch"]) for r in thr} == {(m, b) for m in ("latent_pursuit", "gd", "oracle") for b in (1, 4)}
    for r in thr:
        assert r["status"] == "ok", r
        for k in ("seconds_min", "seconds_median", "per_signal_ms", "signals_per_s"):
            assert _positive(r[k]), (k, r)
        assert r["snr_image_db"]["median"] is None or r["snr_image_db"]["median"] > 40  # noiseless planted signals
        assert _positive(r["flops"]["counted_total"]) and _positive(r["flops"]["total_gflops"])
        if r["method"] != "oracle":
            assert _positive(r["flops"]["loop"]) and _positive(r["flops"]["loop_gflops"])
            assert _positive(r["flops"]["roofline_loop"])
            assert r["flops"]["loop"] <= r["flops"]["counted_total"]
    curves = {c["method"]: c for c in bench["time_to_target"]}
    assert curves["gd"]["mode"] == "trace" and curves["latent_pursuit"]["mode"] == "sweep"
    assert curves["oracle"]["mode"] == "single"
    for c in curves.values():
        assert c["status"] == "ok" and c["points"]
        assert all(_positive(p[0]) for p in c["points"])
    loops = bench["loops"][0]
    assert loops["status"] == "ok" and {x["method"] for x in loops["loops"]} == {"latent_pursuit", "gd"}
    assert all(_positive(x["gflops"]) and _positive(x["roofline"]) for x in loops["loops"])
    assert {(r["method"], r["threads"]) for r in bench["thread_scaling"]} >= {("latent_pursuit", 1), ("gd", 1)}
    t = bench["targets"]
    assert set(t) == {"a_speed_vs_gd", "b_roofline", "c_thousand_images"}
    assert _positive(t["b_roofline"]["ratio"]) and _positive(t["c_thousand_images"]["ratio"])
    solvers = _strict((tmp_path / "solvers.json").read_text())
    assert isinstance(solvers, dict) and solvers["network"] == "3-12-30"
    assert all(_positive(v["1"]) for v in solvers["signals_per_second"].values())
    readme = (tmp_path / "README.md").read_text()
    assert "| latent_pursuit |" in readme and "Performance targets" in readme


def test_loop_measurement_counts_exactly_what_runs() -> None:
    # Each loop's analytic count equals torch's count of the same call (integers: exact).
    task = {"kind": "loops", "generator": {k: v for k, v in TINY.items() if k != "label"}, "generator_label": "tiny",
            "method": "loops", "batch": 4, "loop_iters": 20, "verify_flops": True}
    rec = run_task(task)
    assert rec["status"] == "ok", rec
    assert len(rec["loops"]) == 4  # x1 FISTA, z ADMM, gd, adam
    for x in rec["loops"]:
        assert x["flops"] == x["flops_counted"], x


def test_harness_skips_over_budget_and_says_why(tmp_path: Path) -> None:
    # lp_layerwise solves one LP per sample: its time is linear in B, so it is predicted from B = 1.
    run_bench(_tiny_config(tmp_path, methods=["lp_layerwise"], budget=1e-9, cold_batch=0, thread_scaling=False),
              log_stream=None)
    thr = _strict((tmp_path / "bench.json").read_text())["throughput"]  # type: ignore[index]
    by_b = {r["batch"]: r for r in thr}
    assert by_b[1]["status"] == "ok"
    assert by_b[4]["status"] == "skipped" and "budget" in by_b[4]["reason"]


def test_worker_in_fresh_process_reports_peak_memory() -> None:
    task = {"kind": "solve", "generator": {k: v for k, v in TINY.items() if k != "label"}, "generator_label": "tiny",
            "method": "latent_pursuit", "batch": 4, "min_time": 0.0, "max_repeats": 1, "count_flops": False}
    p = subprocess.run([sys.executable, "-m", "geninv.bench.worker"], input=json.dumps(task), capture_output=True,
                       text=True, timeout=300)
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith(MARKER))
    rec = _strict(line[len(MARKER):])
    assert isinstance(rec, dict) and rec["status"] == "ok", rec
    assert _positive(rec["memory"]["peak_rss_mb"]) and rec["memory"]["delta_mb"] >= 0


@pytest.mark.parametrize("argv", [["bench", "--batches", "0,4"], ["bench", "--methods", "nope"], ["bench", "--batches", "x"]])
def test_cli_bench_refuses_bad_values_before_work(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--" in err


def test_formulations_compute_the_same_gradient() -> None:
    # The three ways of applying per-sample supported matrices must agree before their times mean
    # anything: the gathered and per-sample-loop gradients equal the masked one to float32 rounding.
    gen = {"dims": [3, 12, 30, 60], "output": "plu", "seed": 0, "bias": True}
    task = {"kind": "formulations", "generator": gen, "generator_label": "tiny2", "method": "latent_pursuit",
            "batch": 8, "loop_iters": 2}
    rec = run_task(task)
    assert rec["status"] == "ok", rec
    assert rec["W_shape"] == [30, 12] and rec["layer"] == 2
    forms = {r["formulation"]: r for r in rec["formulations"]}
    assert set(forms) == {"masked", "gathered", "per_sample"}
    assert forms["masked"]["slowdown_vs_masked"] == 1.0
    for name in ("gathered", "per_sample"):
        assert forms[name]["max_rel_diff_vs_masked"] < 1e-5, forms[name]
        assert _positive(forms[name]["seconds_per_iteration"])


def test_batch_one_times_several_single_calls() -> None:
    # B = 1 is timed over `singles` different signals, one call each: the SNR statistics cover all
    # of them and the time is per call.
    task = {"kind": "solve", "generator": {k: v for k, v in TINY.items() if k != "label"}, "generator_label": "tiny",
            "method": "latent_pursuit", "batch": 1, "singles": 5, "min_time": 0.0, "max_repeats": 1}
    rec = run_task(task)
    assert rec["status"] == "ok", rec
    assert rec["calls_per_pass"] == 5 and rec["signals_timed"] == 5
    assert rec["per_signal_ms"] == pytest.approx(1e3 * rec["seconds_min"])
    assert rec["snr_image_db"]["median"] is None or rec["snr_image_db"]["median"] > 40
    assert _positive(rec["flops"]["loop"]) and _positive(rec["flops"]["counted_total"])
