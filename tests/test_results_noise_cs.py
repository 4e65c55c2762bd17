"""The noise and compressed-sensing sections of the results page: every claim can fail (planted
records where it does, and where it holds), its threshold is in its text, and no raw nan/None
reaches a reader; the figures draw from planted records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from geninv.experiments import cs_exp as C
from geninv.experiments import noise_exp as N
from geninv.experiments.common import generator_phrase
from geninv.experiments.records import RecordStore

GEN = "the shipped MNIST generator [20, 128, 392, 784] (plu output)"
IMAGES = 10
SNRS = (20.0, 30.0)


def _spread(v: float) -> list[float]:
    """IMAGES values with median ``v`` and 10 % quantile ``v - 3.2`` (np.percentile, linear)."""
    return [v - 5.0, v - 3.0] + [v] * (IMAGES - 3) + [v + 2.0]


def planted_noise(d: Path, z: dict[str, dict[object, list[float]]], *, ratio: list[float] | None = None,
                  bound: dict[str, list[tuple[str, float, float]]] | None = None) -> Path:
    """Noise records: per method, per input SNR (or ``"8bit"``) the z SNR of every image; ``ratio``:
    sigma_hat / sigma of the default's images; ``bound``: per method, ``(verdict, bound_z, error_z)`` trials."""
    st = {"seed": 0, "dtype": "float64", "batch": 16, "generator": "fp", "generator_description": GEN,
          "bound_dims": [4, 12, 200], "bound_output": "identity", "options": {}}
    recs = []
    for m, per in z.items():
        for x, vals in per.items():
            for i, v in enumerate(vals):
                r = {"method": m, "image": i, "snr": {"z": v, "x1": v, "y": v}, "sigma": 1.0, "seconds": 0.01,
                     "converged": True}
                if x == "8bit":
                    recs.append({**r, "kind": "solve8", "key": f"8bit/image={i}/{m}", "snr_db": 53.0})
                else:
                    recs.append({**r, "kind": "solve", "key": f"snr={x:g}/image={i}/{m}", "snr_db": x})
                    if m == "auto" and ratio is not None:
                        recs[-1]["sigma_hat"] = ratio[i % len(ratio)]
    for x in SNRS:
        for i in range(IMAGES):
            recs.append({"kind": "theory", "key": f"snr={x:g}/image={i}/theory", "image": i, "snr_db": x, "sigma": 1.0,
                         "expected_snr": {mode: {"z": x, "x1": x, "y": x} for mode in ("layerwise", "end_to_end")}})
    for m, trials in (bound or {}).items():
        for t, (verdict, b, e) in enumerate(trials):
            recs.append({"kind": "bound", "key": f"bound/snr=40/trial={t}/{m}", "method": m, "snr_db": 40.0, "trial": t,
                         "verdict": verdict, "reason": "" if verdict == "holds" else "layer x_1: lam too small",
                         "bound_z": b if verdict == "holds" else None, "error_z": e})
    with RecordStore(d, "noise", st) as store:
        store.append(recs)
    return d


def as_expected() -> dict[str, dict[object, list[float]]]:
    """The default and Latent-Pursuit (auto) at the end-to-end Oracle; the layer-wise Oracle 15 dB lower."""
    z: dict[str, dict[object, list[float]]] = {}
    for m, off in (("auto", 0.0), ("oracle_e2e", 0.0), ("latent_pursuit_auto", -1.0), ("oracle", -15.0)):
        z[m] = {x: _spread(x + off) for x in SNRS}
        z[m]["8bit"] = _spread(55.0 + off)
    return z


GOOD_BOUND = {"layered_bp_thm": [("holds", 1.0, 0.5), ("holds", 0.1, 0.01)],
              "latent_pursuit_auto": [("does not hold", 0.0, 0.2), ("does not hold", 0.0, 0.3)]}


def noise_verdicts(d: Path) -> dict[str, str]:
    return {c: v for c, v, _ in N.noise_claims(d)}


def _one(vs: dict[str, str], *words: str) -> str:
    hits = [c for c in vs if all(w in c for w in words)]
    assert len(hits) == 1, (words, list(vs))
    return vs[hits[0]]


def test_noise_claims_hold_on_records_that_meet_them(tmp_path):
    vs = noise_verdicts(planted_noise(tmp_path / "ok", as_expected(), ratio=[1.0, 0.95, 1.05], bound=GOOD_BOUND))
    assert len(vs) == 2 + 1 + 2 * 2 + 1 + 2, vs
    assert _one(vs, "Latent-Pursuit, auto noise", "Theorem 2") == "not certified"
    assert {v for c, v in vs.items() if "auto noise: measured" not in c} == {"holds"}, vs
    # every threshold is in the claim's text
    for words in (("0.5 dB below", "1.5 dB below", "20 dB"), ("within 2 dB", "30 dB"), ("at least 2 dB above",),
                  ("factor 1.25", "90 %"), ("relative slack 1e-09",)):
        assert any(all(w in c for w in words) for c in vs), words


def _shift(z: dict[str, dict[object, list[float]]], m: str, x: object, by: float, tail: float = 0.0) -> None:
    vals = [v + by for v in z[m][x]]
    vals[0] += tail  # the lowest image: moves the 10 % quantile, not the median
    vals[1] += tail
    z[m][x] = vals


@pytest.mark.parametrize("change, words", [
    (("auto", 20.0, -1.0, 0.0), ("Default", "at input SNR 20 dB")),       # median 1 dB below the Oracle's
    (("auto", 30.0, 0.0, -6.0), ("Default", "at input SNR 30 dB")),       # tail 10 % quantile > 1.5 dB below
    (("auto", "8bit", -1.0, 0.0), ("Default", "8-bit")),
    (("latent_pursuit_auto", 20.0, -2.5, 0.0), ("within 2 dB", "20 dB")),  # 3.5 dB below
    (("latent_pursuit_auto", 30.0, +4.0, 0.0), ("within 2 dB", "30 dB")),  # 3 dB above: within is two-sided
    (("oracle", 20.0, +14.5, 0.0), ("at least 2 dB above", "20 dB")),      # layer-wise Oracle 0.5 dB under LP
])
def test_each_noise_claim_fails_where_the_records_contradict_it(tmp_path, change, words):
    z = as_expected()
    m, x, by, tail = change
    _shift(z, m, x, by, tail)
    vs = noise_verdicts(planted_noise(tmp_path / "bad", z, ratio=[1.0], bound=GOOD_BOUND))
    assert _one(vs, *words) == "does not hold", vs
    assert sum(v == "does not hold" for v in vs.values()) == 1, vs


def test_the_lp_claim_against_the_layerwise_oracle_is_not_vacuous(tmp_path):
    """Latent-Pursuit far above the layer-wise Oracle but far from the end-to-end one: the "within"
    claim fails (it is two-sided), the "above the layer-wise Oracle" one holds."""
    z = as_expected()
    z["latent_pursuit_auto"] = {x: _spread(x - 8.0) for x in SNRS}
    vs = noise_verdicts(planted_noise(tmp_path / "lp", z))
    for x in SNRS:
        assert _one(vs, "within 2 dB", f"{x:g} dB") == "does not hold"
        assert _one(vs, "at least 2 dB above", f"{x:g} dB") == "holds"


def test_sigma_estimate_claim_fails_when_too_many_estimates_are_off(tmp_path):
    d = planted_noise(tmp_path / "s", as_expected(), ratio=[1.0] * 8 + [1.3, 0.7])  # 80 % inside [0.8, 1.25]
    assert _one(noise_verdicts(d), "factor 1.25") == "does not hold"


def test_theorem2_claim_fails_on_an_error_above_the_bound(tmp_path):
    bound = {"layered_bp_thm": [("holds", 1.0, 0.5), ("holds", 0.1, 0.1 * (1 + 1e-6))]}
    claims = N.noise_claims(planted_noise(tmp_path / "b", as_expected(), bound=bound))
    (c, v, e), = [c for c in claims if "Theorem 2" in c[0]]
    assert v == "does not hold" and "1 above the bound" in e


def _no_raw(text: str) -> None:
    assert not re.search(r"(?<![\w.])(nan|NaN|None)(?![\w.])", text), text


def test_noise_summary_has_no_raw_nan_or_none(tmp_path):
    z = as_expected()
    z["gd"] = {20.0: _spread(15.0)}  # no records at 30 dB: a "-" cell
    d = planted_noise(tmp_path / "n", z, ratio=[1.0], bound=GOOD_BOUND)
    N.noise_summary(d)
    md = (d / "summary.md").read_text()
    _no_raw(md)
    _no_raw(json.dumps(json.loads((d / "summary.json").read_text())["claims"]))
    assert "not certified" in md


def test_noise_figures_from_planted_records(tmp_path):
    d = planted_noise(tmp_path / "f", as_expected(), ratio=[1.0], bound=GOOD_BOUND)
    paths = N.plot_noise(d) + N.plot_bound(d)
    assert [p.name for p in paths] == ["noise_snr.png", "noise_theorem2.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_generator_phrase_reads_as_english():
    assert generator_phrase(GEN) == GEN
    assert generator_phrase("random [20, 128] plu") == "generator random [20, 128] plu"


# -- compressed sensing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stars, verdict", [
    ({"hybrid": 40, "gd": 160, "adam": 80}, "holds"),
    ({"hybrid": 40, "gd": None, "adam": 80}, "holds"),           # gd never reaches it: later than any m
    ({"hybrid": 40, "gd": 160, "adam": 40}, "does not hold"),    # a tie is not "strictly smaller"
    ({"hybrid": 80, "gd": 160, "adam": 40}, "does not hold"),
    ({"hybrid": None, "gd": None, "adam": None}, "does not hold"),  # nobody reaches it: not a win
])
def test_cs_claim_can_fail(stars, verdict):
    (c, v, e), = C.cs_claims({"latent_pursuit": None, **stars})
    assert v == verdict, (stars, v)
    assert "60 dB" in c and "strictly smaller m" in c
    _no_raw(e)
    assert "not reached" in e


def planted_cs(d: Path, med: dict[str, dict[int, float]]) -> Path:
    st = {"seed": 0, "dtype": "float64", "batch": 8, "generator": "fp", "generator_description": GEN, "snr_db": None,
          "options": {}}
    recs = [{"kind": "solve", "key": f"m={m}/image={i}/{k}", "method": k, "m": m, "n": 784, "image": i,
             "snr": {"z": v, "y": v}, "seconds": 0.01, "converged": True, "s": [50, 200]}
            for k, per in med.items() for m, v in per.items() for i in range(3)]
    with RecordStore(d, "cs", st) as store:
        store.append(recs)
    return d


def test_cs_summary_and_figure_from_planted_records(tmp_path):
    d = planted_cs(tmp_path / "cs", {"latent_pursuit": {40: 10.0, 80: 15.0}, "hybrid": {40: 300.0, 80: 300.0},
                                    "gd": {40: 10.0, 80: 70.0}, "adam": {40: 65.0, 80: 70.0}})
    C.cs_summary(d)
    md = (d / "summary.md").read_text()
    _no_raw(md)
    summ = json.loads((d / "summary.json").read_text())
    assert summ["m_star"] == {"latent_pursuit": None, "hybrid": 40, "gd": 80, "adam": 40}
    assert [c["verdict"] for c in summ["claims"]] == ["does not hold"]  # tie with Adam at m = 40
    assert "Latent-Pursuit m* = not reached" in summ["claims"][0]["evidence"]
    (p,) = C.plot_cs(d)
    assert p.stat().st_size > 10_000


def test_default_claim_pairs_images_and_reports_the_difference_of_medians(tmp_path):
    """One image of the default at a different, equally good minimum (3 dB lower z SNR) moves the
    median of 10 images but not the per-image comparison; an image-by-image loss of 1 dB fails."""
    z = as_expected()
    z["oracle_e2e"][30.0] = [20.0 + 2 * i for i in range(IMAGES)]  # median 29
    z["auto"][30.0] = list(z["oracle_e2e"][30.0])
    z["auto"][30.0][5] -= 3.0  # 30 -> 27: the default's median 27.5
    claims = N.noise_claims(planted_noise(tmp_path / "p", z))
    (c, v, e), = [x for x in claims if "Default" in x[0] and "30 dB" in x[0]]
    assert v == "holds" and "median difference +0.00 dB" in e and "(difference -1.50)" in e
    z["auto"][30.0] = [o - 1.0 for o in z["oracle_e2e"][30.0]]
    claims = N.noise_claims(planted_noise(tmp_path / "q", z))
    (c, v, e), = [x for x in claims if "Default" in x[0] and "30 dB" in x[0]]
    assert v == "does not hold" and "median difference -1.00 dB" in e
