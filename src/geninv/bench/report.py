"""The markdown summary of a ``bench.json`` (``README.md`` next to it)."""

from __future__ import annotations

from typing import Any

__all__ = ["markdown"]


def _f(v: Any, fmt: str = ".1f", none: str = "-") -> str:
    if v is None:
        return none
    try:
        return format(float(v), fmt)
    except (TypeError, ValueError):
        return str(v)


def _snr(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    if d.get("median") is None:
        return "exact"
    return _f(d["median"])


def _time_cell(r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        return "skipped" if r.get("status") == "skipped" else str(r.get("status"))
    ms = r["per_signal_ms"]
    return f"{ms:.3g} ms ({r['signals_per_s']:.3g}/s)"


def markdown(bench: dict[str, Any]) -> str:
    """The README table of one benchmark run."""
    m = bench["machine"]
    la = bench["load_average"]
    peak = bench["peak"]
    cfg = bench["config"]
    L: list[str] = []
    L.append("# geninv benchmark results\n")
    L.append(f"Produced by `{bench.get('command') or 'geninv bench'}` on {bench['created']} "
             f"({bench['seconds']:.0f} s). Raw numbers: `bench.json`; signals per second per method: `solvers.json`.\n")
    gpu = m.get("gpu") or m.get("gpu_note", "no GPU")
    L.append(f"- Machine: {m['cpu']}, {m['cpu_count']} cores, torch {m['torch']} with {m['torch_threads']} threads, "
             f"device `{m['device']}`, dtype {cfg['dtype']}; GPU: {gpu}.")
    L.append(f"- Load average (1/5/15 min): start {la['start']}, end {la['end']}.")
    st = peak["start"]
    L.append(f"- Measured fp32 matmul peak: {_f(peak['peak_gflops'])} GFLOP/s (best square product; start "
             f"{_f(st['peak_gflops'])}, end {_f(peak['end']['peak_gflops'])}); memory bandwidth {_f(st.get('bandwidth_gbs'))} GB/s.")
    for label, g in bench["generators"].items():
        L.append(f"- `{label}`: {'-'.join(str(d) for d in g['dims'])}, {g['output']} output; {g['description']}.")
    L.append("")
    t = bench.get("targets") or {}
    if t:
        L.append("## Performance targets (ratios from this run)\n")
        L.append("| target | measured | ratio | threshold | met |")
        L.append("|---|---|---|---|---|")
        a = t.get("a_speed_vs_gd", {})
        L.append(f"| (a) {a.get('goal', '')} | gd reaches its final {_f(a.get('gd_final_snr_db'))} dB in "
                 f"{_f(a.get('gd_seconds'), '.2f')} s; Latent-Pursuit reaches it in {_f(a.get('latent_pursuit_seconds'), '.2f')} s "
                 f"(at {cfg['target_db']:g} dB: {_f(a.get('ratio_at_target_db'), '.1f')}x) | {_f(a.get('ratio'), '.1f')}x | 10x | "
                 f"{'yes' if a.get('met') else 'no'} |")
        b = t.get("b_roofline", {})
        ws = b.get("whole_stages") or {}
        L.append(f"| (b) {b.get('goal', '')} | Latent-Pursuit's iteration loops {_f(b.get('latent_pursuit_loop_gflops'))} "
                 f"GFLOP/s of {_f(b.get('peak_gflops'))} (a whole solve's stages: {_f(ws.get('gflops'))} GFLOP/s, "
                 f"{_f(100 * ws['ratio'] if ws.get('ratio') is not None else None, '.0f')} %) | "
                 f"{_f(100 * b['ratio'] if b.get('ratio') is not None else None, '.0f')} % | 40 % | "
                 f"{'yes' if b.get('met') else 'no'} |")
        c = t.get("c_thousand_images", {})
        L.append(f"| (c) {c.get('goal', '')} | cold call {_f(c.get('cold_seconds'), '.1f')} s (warm {_f(c.get('warm_seconds'), '.1f')} s), "
                 f"median image SNR {_f(c.get('median_image_snr_db'))} dB | {_f(c.get('ratio'), '.1f')}x under the limit | "
                 f"{_f(c.get('limit_s'), '.0f')} s | {'yes' if c.get('met') else 'no'} |")
        L.append("")
    thr = bench["throughput"]
    batches = sorted({r["batch"] for r in thr})
    for label in bench["generators"]:
        rows = [r for r in thr if r.get("generator") == label]
        methods = list(dict.fromkeys(r["method"] for r in rows))
        L.append(f"## `{label}`: wall time per signal (signals per second)\n")
        L.append("| method | " + " | ".join(f"B = {b}" for b in batches) + " |")
        L.append("|---|" + "---|" * len(batches))
        for meth in methods:
            cells = []
            for b in batches:
                r = next((x for x in rows if x["method"] == meth and x["batch"] == b), None)
                cells.append("-" if r is None else _time_cell(r))
            L.append(f"| {meth} | " + " | ".join(cells) + " |")
        L.append("")
        ref = cfg["curve_batch"] if cfg["curve_batch"] in batches else batches[-1]
        L.append(f"`{label}` at B = {ref}: quality, memory and throughput of the solver loops\n")
        L.append("| method | median image SNR (dB) | median latent SNR (dB) | converged | peak RSS (MB) | stages GFLOP/s | "
                 "stages / peak | all-products GFLOP/s |")
        L.append("|---|---|---|---|---|---|---|---|")
        for meth in methods:
            r = next((x for x in rows if x["method"] == meth and x["batch"] == ref), None)
            if r is None or r.get("status") != "ok":
                L.append(f"| {meth} | {r.get('status') if r else '-'} | | | | | | |")
                continue
            fl = r.get("flops", {})
            roof = fl.get("roofline_loop")
            L.append(f"| {meth} | {_snr(r['snr_image_db'])} | {_snr(r['snr_latent_db'])} | {r['converged_frac']:.2f} | "
                     f"{_f(r['memory'].get('peak_rss_mb'), '.0f')} | {_f(fl.get('loop_gflops'))} | "
                     f"{_f(100 * roof if roof is not None else None, '.0f')}{' %' if roof is not None else ''} | "
                     f"{_f(fl.get('total_gflops'))} |")
        L.append("")
    loops = [r for r in (bench.get("loops") or []) if r.get("status") == "ok"]
    if loops:
        L.append(f"## Iteration loops at B = {cfg['curve_batch']} ({loops[0]['iterations']} iterations each, no sample "
                 "stopping, convergence checks included)\n")
        L.append("| generator | method | loop | W (n_in, n_out) | seconds | GFLOP/s | of peak |")
        L.append("|---|---|---|---|---|---|---|")
        for r in loops:
            for x in r["loops"]:
                roof = x.get("roofline")
                L.append(f"| {r['generator']} | {x['method']} | {x['loop']} | {tuple(x['n_in_out'])} | {x['seconds']:.3f} | "
                         f"{_f(x['gflops'])} | {_f(100 * roof if roof is not None else None, '.0f')} % |")
        L.append("")
    forms = [r for r in (bench.get("formulations") or []) if r.get("status") == "ok" and r.get("formulations")]
    if forms:
        L.append(f"## Per-sample supports: masked full matrices vs gathered matrices (B = {cfg['curve_batch']})\n")
        L.append("One linearized-ADMM gradient `A_b^T (A_b x - ...) + rho C_b^T (C_b x - ...)` of the hidden layer with the "
                 "most rows, three ways (same numbers: max relative difference shown): the shipped masked formulation "
                 "(shared W, 0/1 row masks, two GEMMs), each sample's rows gathered into padded batched matrices "
                 "(`bmm`), and a Python loop over samples.\n")
        L.append("| generator | W (n_out, n_in) | formulation | ms / iteration | GFLOP/s | x slower than masked | "
                 "one-off setup (s) | max rel. diff |")
        L.append("|---|---|---|---|---|---|---|---|")
        for r in forms:
            for x in r["formulations"]:
                L.append(f"| {r['generator']} | {tuple(r['W_shape'])} | {x['formulation']} | "
                         f"{1e3 * x['seconds_per_iteration']:.2f} | {_f(x['gflops'])} | {x['slowdown_vs_masked']:.1f} | "
                         f"{x['setup_seconds']:.3f} | {x['max_rel_diff_vs_masked']:.1e} |")
        L.append("")
    ts = [r for r in (bench.get("thread_scaling") or []) if r.get("status") == "ok"]
    if ts:
        L.append("Thread scaling (primary generator, B = {}): ".format(cfg["curve_batch"]) + "; ".join(
            f"{r['method']} {r['threads']} thread(s) {r['seconds_min']:.2f} s" for r in ts) + ".\n")
    curves = bench.get("time_to_target") or []
    if curves:
        L.append(f"## Time to a median image SNR of {cfg['target_db']:g} dB\n")
        L.append("| generator | method | batch | how | seconds to target | final median SNR (dB) |")
        L.append("|---|---|---|---|---|---|")
        for c in curves:
            if c.get("status") != "ok":
                L.append(f"| {c.get('generator')} | {c.get('method')} | - | {c.get('status')} | {c.get('reason', '')} | |")
                continue
            t40 = next((d["seconds"] for d in c["seconds_to_target"] if d["target_db"] == cfg["target_db"]), None)
            L.append(f"| {c['generator']} | {c['method']} | {c['batch']} | {c['mode']} | "
                     f"{_f(t40, '.3g', 'not reached')} | {_f(c.get('final_snr_db'))} |")
        L.append("")
    skipped = [r for r in thr if r.get("status") != "ok"]
    if skipped:
        L.append("## Configurations not measured\n")
        for r in skipped:
            L.append(f"- `{r['generator']}` {r['method']} B = {r['batch']}: {r.get('status')} ({r.get('reason')})")
        L.append("")
    prof = bench.get("profile")
    if prof:
        L.append("## Where the time goes (torch.profiler)\n")
        for meth, p in prof.items():
            top = ", ".join(f"{o['op']} {100 * o['self_share']:.0f} %" for o in p["top_ops"][:6])
            L.append(f"- {meth} at B = {p['batch']}: {p['wall_unprofiled_s']:.2f} s; matrix products "
                     f"{100 * p['matmul_share']:.0f} % of the profiled wall time, outside any op (Python) "
                     f"{100 * p['outside_ops_share']:.0f} %; {p['ops']} ops. Top: {top}. Stages: "
                     + (", ".join(f"{k} {v:.2f} s" for k, v in (p.get("stage_seconds") or {}).items()) or "-"))
        L.append("")
    L.append("Method: best of repeats after a warm-up, each configuration in a fresh process (peak RSS = its "
             "`ru_maxrss`); FLOPs of the stages and loops are counted analytically from the matrix shapes and "
             "per-sample iteration counts (`geninv.bench.flops`, checked against `torch.utils.flop_counter`). "
             "'Stages GFLOP/s' divides the iterative stages' products by their wall time in a full solve (warm "
             "starts, checks and the samples that converge last included); 'all-products GFLOP/s' divides every "
             "counted matrix product of the call (debiasing included) by the call's wall time.\n")
    return "\n".join(L)
