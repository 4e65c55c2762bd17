"""The reproductions in tiny sizes: files written, numbers right, and resuming after interruption.

Tiny = a few trials on small generators, so the suite stays fast; the real `--quick` runs are
the `slow`-marked tests at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import geninv
from geninv.experiments.common import PAPER_METHODS, certify_status, method_status, mnist_status
from geninv.experiments.records import Unit as _Unit
from geninv.experiments.records import comparable, load_records

REPO = Path(__file__).resolve().parents[1]

# Tiny random sweep: n_0 = 4, n = 60; n_1 = 6 (s_1 ~ 3 < n_0: not unique) and 24 (s_1 ~ 12 >= 2 n_0,
# s_1 < n / 2: the middle regime where the Oracle is exact).
TINY_RANDOM = "dict(n0=4, n=60, n1_values=(6, 24), trials=2)"
TINY_GD = {"debias": True, "max_iter": 300}


def _need(*methods: str) -> None:
    for m in methods:
        st = method_status(m)
        if not st.available:
            pytest.skip(st.reason)


def _tiny_random_config():
    from geninv.experiments.random_sweep import RandomSweepConfig

    cfg = RandomSweepConfig(**eval(TINY_RANDOM))
    cfg.options["gd"] = dict(TINY_GD)
    return cfg


def _n_keys(cfg) -> int:
    extra = 1 if certify_status().available else 0
    return len(cfg.n1_values) * cfg.trials * (len(cfg.methods) + extra)


@pytest.fixture(scope="module")
def random_ref(tmp_path_factory):
    """One uninterrupted tiny sweep, the reference of the resume tests."""
    from geninv.experiments.random_sweep import run_random_sweep

    _need(*_tiny_random_config().methods)

    out = tmp_path_factory.mktemp("random_ref")
    res = run_random_sweep(_tiny_random_config(), out, progress=False)
    return out, res


def test_random_sweep_writes_records_figure_and_summary(random_ref) -> None:
    out, res = random_ref
    cfg = _tiny_random_config()
    for name in ("records.jsonl", "records.csv", "settings.json", "fig4_random_sweep.png", "summary.md", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    recs = load_records(out)
    assert len(recs) == _n_keys(cfg) and len({r["key"] for r in recs}) == len(recs)
    assert not res["skipped"], res["skipped"]
    for r in recs:
        assert r["version"] == geninv.__version__ and r["n0"] == 4 and r["n"] == 60 and "seed" in r
    solves = [r for r in recs if r["kind"] == "solve"]
    assert set(PAPER_METHODS) <= {r["method"] for r in solves} == set(cfg.methods)
    for r in solves:
        assert set(r["snr"]) == {"z", "x1", "y"} and isinstance(r["converged"], bool) and r["seconds"] >= 0


def test_random_sweep_records_are_the_true_snrs(random_ref) -> None:
    """Recompute one trial by hand: same generator, same z, and the Oracle's SNR is exact in the middle regime."""
    from geninv.experiments.records import derive_seed

    out, _ = random_ref
    recs = {r["key"]: r for r in load_records(out)}
    r = recs["n1=24/trial=1/oracle"]
    G = geninv.random_generator([4, 24, 60], output="tanh", seed=r["seed"], dtype=torch.float64)
    z, y = G.sample(1, seed=derive_seed(r["seed"], "z"))
    assert r["s"] == [int(G.trace(z).cardinalities[0][0])]
    res = geninv.invert(G, y, method="oracle", supports=G.trace(z).supports)
    assert abs(float(geninv.snr(z, res.z)[0]) - r["snr"]["z"]) < 1e-6 or r["snr"]["z"] == float("inf")
    # float64 pseudo-inverses are accurate to ~1e-13 relative: well above 100 dB
    assert r["snr"]["z"] > 100 and r["snr"]["y"] > 100


def test_random_sweep_certificates_recorded(random_ref) -> None:
    st = certify_status()
    if not st.available:
        pytest.skip(st.reason)
    out, _ = random_ref
    certs = [r for r in load_records(out) if r["kind"] == "certify"]
    assert len(certs) == 4 and all(r["unique"] in (True, False, None) for r in certs)
    # n_1 = 6 gives s_1 <= 6 < ... typically < n_0 = 4 is not guaranteed; but s_1 < n_0 can never be certified unique
    for r in certs:
        if r["s"][0] < r["n0"]:
            assert r["unique"] is not True


def test_random_sweep_interrupted_then_resumed_equals_uninterrupted(random_ref, tmp_path) -> None:
    from geninv.experiments.random_sweep import run_random_sweep

    ref_dir, _ = random_ref

    def stop_after_1(u: _Unit, n: int) -> None:
        if n == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_random_sweep(_tiny_random_config(), tmp_path, progress=False, callback=stop_after_1, plots=False)
    n_first = len(load_records(tmp_path))
    assert 0 < n_first < _n_keys(_tiny_random_config())
    res = run_random_sweep(_tiny_random_config(), tmp_path, progress=False)
    assert res["ran"] == 3  # 4 trials, 1 finished before the interruption: none redone
    assert comparable(load_records(tmp_path)) == comparable(load_records(ref_dir))
    again = run_random_sweep(_tiny_random_config(), tmp_path, progress=False, plots=False)
    assert again["ran"] == 0


def test_random_sweep_settings_mismatch_refused(random_ref, tmp_path) -> None:
    from geninv.experiments.random_sweep import run_random_sweep

    cfg = _tiny_random_config()
    cfg.trials, cfg.n1_values = 1, (6,)
    run_random_sweep(cfg, tmp_path, progress=False, plots=False)
    cfg.options["gd"]["max_iter"] = 301
    with pytest.raises(geninv.InputError, match=r"settings: .*gd: stored \{'debias': True, 'max_iter': 300\}"):
        run_random_sweep(cfg, tmp_path, progress=False, plots=False)
    cfg.options["gd"]["max_iter"] = 300
    cfg.seed = 1
    with pytest.raises(geninv.InputError, match="seed: stored 0, this run 1"):
        run_random_sweep(cfg, tmp_path, progress=False, plots=False)
    # Adding a method to a finished run is allowed: only its trials are computed.
    cfg.seed = 0
    cfg.methods = (*cfg.methods, "adam")
    cfg.options["adam"] = {"max_iter": 50}
    res = run_random_sweep(cfg, tmp_path, progress=False, plots=False)
    assert res["ran"] == 1 and "n1=6/trial=0/adam" in {r["key"] for r in load_records(tmp_path)}


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_experiments import _tiny_random_config
    from geninv.experiments.random_sweep import run_random_sweep
    # Sleep after each trial is on disk so that the parent can SIGKILL us mid-run.
    run_random_sweep(_tiny_random_config(), {out!r}, progress=False, plots=False,
                     callback=lambda u, n: time.sleep(0.4))
    """
)


def wait_for_records(proc: subprocess.Popen, path: Path, count: int, timeout: float = 120.0) -> None:
    """Wait until ``path`` (a records.jsonl) holds ``count`` lines; fail the test if ``proc`` ends
    first (with the end of its stderr) or nothing appears within ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    pytest.fail(f"no records appeared within {timeout:g} s")


def test_sigkill_mid_run_resumes_to_the_same_records(random_ref, tmp_path) -> None:
    """A reproduction killed with SIGKILL resumes with nothing lost and nothing duplicated."""
    from geninv.experiments.random_sweep import run_random_sweep

    ref_dir, _ = random_ref
    out = tmp_path / "killed"
    script = _KILL_SCRIPT.format(tests=str(REPO / "tests"), out=str(out))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    per_trial = len(_tiny_random_config().methods) + (1 if certify_status().available else 0)
    path = out / "records.jsonl"
    try:
        wait_for_records(proc, path, 2 * per_trial)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    n_before = len(load_records(out))
    assert 2 * per_trial <= n_before < _n_keys(_tiny_random_config())
    res = run_random_sweep(_tiny_random_config(), out, progress=False, plots=False)
    assert res["ran"] == 4 - n_before // per_trial
    final = load_records(out)
    assert len(final) == len({r["key"] for r in final}) == _n_keys(_tiny_random_config())
    assert comparable(final) == comparable(load_records(ref_dir))


# -- image experiments (MNIST and inpainting) on a small random generator --------------------------

IMG_METHODS = ("oracle", "latent_pursuit", "gd")


def _small_image_generator():
    # 5 -> 30 -> 90 -> 196 (14 x 14 images), PLU output as the MNIST generator: s_1 ~ 15 >= 2 n_0,
    # s_2 ~ 45 >= 2 s_1... not always, but s_2 < 196 / 2, the regime where the Oracle is exact.
    return geninv.random_generator([5, 30, 90, 196], output="plu", seed=3, dtype=torch.float64)


def _image_config(mask=None):
    from geninv.experiments.mnist_exp import ImageConfig

    cfg = ImageConfig(images=6, batch=3, mask=mask, rows=5)
    cfg.options["gd"] = {"debias": False, "max_iter": 300}
    return cfg


@pytest.mark.parametrize("mask", [None, "random", "block"])
def test_image_experiment_writes_records_figures_and_exact_oracle(tmp_path, mask) -> None:
    _need(*IMG_METHODS)
    from geninv.experiments.mnist_exp import run_image_experiment
    from geninv.experiments.records import decode_array

    res = run_image_experiment(_image_config(mask), tmp_path, experiment=f"img_{mask}",
                               generator=_small_image_generator(), progress=False)
    assert not res["skipped"]
    names = {p.name for p in res["figures"]}
    assert {"snr_boxplot.png", "grid_typical.png", "grid_gd_failures.png"} <= names
    for p in res["figures"]:
        assert p.stat().st_size > 1000
    recs = load_records(tmp_path)
    assert len(recs) == 6 * len(IMG_METHODS)
    for r in recs:
        assert set(r["snr"]) == {"z", "x1", "x2", "y"}
        assert ("mask" in r) == (mask is not None)
    # The records' images are the generator's outputs (float16: ~3 decimal digits)
    G = _small_image_generator()
    r = next(x for x in recs if x["method"] == "oracle" and x["image"] == 4)
    z = torch.randn(1, 5, generator=torch.Generator().manual_seed(r["seed"]), dtype=torch.float64)
    torch.testing.assert_close(torch.from_numpy(decode_array(r["y_true"])).double(), G(z)[0], atol=4e-3, rtol=1e-3)
    if mask == "block":
        assert (~decode_array(r["mask"]).reshape(14, 14)[:5]).all() and decode_array(r["mask"]).reshape(14, 14)[5:].all()
    if mask == "random":
        assert r["observed"] == 196 - round(0.45 * 196)
    # The Oracle knows the supports: exact recovery of the whole image (hidden pixels too) wherever
    # the supported matrices have full column rank, which is every sample of this regime.
    oracle = [x for x in recs if x["method"] == "oracle"]
    assert sum(x["snr"]["y"] > 100 for x in oracle) >= 5


def test_image_experiment_resume_after_interrupt(tmp_path) -> None:
    _need(*IMG_METHODS)
    from geninv.experiments.mnist_exp import run_image_experiment

    G = _small_image_generator()
    ref = run_image_experiment(_image_config("random"), tmp_path / "ref", experiment="img", generator=G,
                               progress=False, plots=False)
    assert ref["ran"] == 2

    def stop(u: _Unit, n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_image_experiment(_image_config("random"), tmp_path / "run", experiment="img", generator=G,
                             progress=False, plots=False, callback=stop)
    res = run_image_experiment(_image_config("random"), tmp_path / "run", experiment="img", generator=G,
                               progress=False, plots=False)
    assert res["ran"] == 1
    assert comparable(load_records(tmp_path / "run")) == comparable(load_records(tmp_path / "ref"))


def test_mnist_on_the_shipped_generator(tmp_path) -> None:
    st = mnist_status()
    if not st.available:
        pytest.skip(st.reason)
    _need(*IMG_METHODS)
    from geninv.experiments.inpaint import inpaint_config, run_inpaint
    from geninv.experiments.mnist_exp import ImageConfig, run_mnist

    cfg = ImageConfig(images=2, batch=2)
    cfg.options["gd"] = {"debias": False, "max_iter": 100}
    res = run_mnist(cfg, tmp_path / "mnist", progress=False)
    assert len(load_records(tmp_path / "mnist")) == 6 and len(res["figures"]) == 3
    assert load_records(tmp_path / "mnist")[0]["dims"] == [20, 128, 392, 784]
    icfg = inpaint_config("block", images=2, batch=2)
    icfg.options["gd"] = {"debias": False, "max_iter": 100}
    run_inpaint(icfg, tmp_path / "block", progress=False, plots=False)
    assert all(r["observed"] == 15 * 28 for r in load_records(tmp_path / "block"))


# -- report and command line ---------------------------------------------------------------------

def test_index_page_shows_every_figure_and_table(random_ref, tmp_path) -> None:
    _need(*IMG_METHODS)
    from geninv.experiments.mnist_exp import run_image_experiment
    from geninv.experiments.report import write_index

    ref_dir, _ = random_ref
    img = tmp_path / "img"
    run_image_experiment(_image_config("block"), img, experiment="inpaint_block", generator=_small_image_generator(),
                         progress=False)
    page = write_index(tmp_path, [ref_dir, img, tmp_path / "absent"], skipped=["mnist: not available"])
    text = page.read_text()
    for d in (ref_dir, img):
        for png in d.glob("*.png"):
            assert os.path.relpath(png, tmp_path) in text
    assert text.count("<table>") >= 5 and "not available" in text and "absent: no records" in text
    md = (tmp_path / "results.md").read_text()
    assert "| n_1 |" in md and "Median SNR of z" in md


def test_cli_reproduce_random_then_resume_then_mismatch(tmp_path, capsys) -> None:
    _need("oracle")
    from geninv.cli import main

    args = ["reproduce", "random", "--quick", "--trials", "2", "--n1", "30,200", "--methods", "oracle",
            "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 trial units run" in out and (tmp_path / "fig4_random_sweep.png").exists()
    assert (tmp_path / "command.txt").read_text().startswith("geninv reproduce random --quick")
    assert main(args) == 0
    assert "0 trial units run" in capsys.readouterr().out
    assert main(args[:-1] + ["--seed", "5", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "seed: stored 0, this run 5" in err and "Traceback" not in err


def test_demo_skips_mnist_with_a_reason_when_the_generator_is_missing(tmp_path, monkeypatch, capsys) -> None:
    from geninv.experiments import common
    from geninv.experiments.demo import run_demo

    monkeypatch.setattr(common, "mnist_status",
                        lambda: common.MethodStatus("mnist", False, "geninv.load_mnist_generator is not available"))
    assert run_demo(0, 4, results=tmp_path, progress=False, experiments=("mnist", "inpaint")) == 0
    err = capsys.readouterr().err
    assert "skipped" in err and "load_mnist_generator" in err
    assert "load_mnist_generator" in (tmp_path / "index.html").read_text()


def test_demo_runs_noise_and_cs_and_shows_them_on_the_page(tmp_path, capsys) -> None:
    # make demo also runs the noise and cs quick experiments; the page gets their own sections (their
    # tables and figures, not the image-experiment layout).
    from geninv.experiments.demo import run_demo

    assert run_demo(0, 4, results=tmp_path, progress=False, experiments=("noise", "cs")) == 0
    page = (tmp_path / "index.html").read_text()
    assert "Noisy signals" in page and "Compressed sensing" in page
    assert "noise_snr.png" in page and "cs_snr.png" in page
    assert (tmp_path / "quick" / "noise" / "records.jsonl").exists()


# -- the real --quick runs (about a minute each on 2 cores) ---------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("argv", [["random"], ["mnist"], ["inpaint", "--mask", "random"], ["inpaint", "--mask", "block"]])
def test_quick_reproductions(tmp_path, argv) -> None:
    from geninv.cli import main

    t0 = time.perf_counter()
    assert main(["reproduce", *argv, "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    assert time.perf_counter() - t0 < 300
    assert list(tmp_path.glob("*.png")) and (tmp_path / "summary.md").exists()


def test_unavailable_method_is_skipped_with_its_reason_never_faked(tmp_path, monkeypatch) -> None:
    from geninv.experiments import common
    from geninv.experiments.random_sweep import run_random_sweep

    real = common.method_status

    def fake_status(name: str) -> common.MethodStatus:
        if common.solver_of(name) == "gd":
            return common.MethodStatus(name, False, "gd is not available (test)")
        return real(name)

    monkeypatch.setattr(common, "method_status", fake_status)
    cfg = _tiny_random_config()
    cfg.methods, cfg.n1_values, cfg.trials, cfg.certify = ("oracle", "gd"), (24,), 1, False
    res = run_random_sweep(cfg, tmp_path / "a", progress=False, plots=False)
    assert res["skipped"] == ["gd: gd is not available (test)"]
    assert {r["method"] for r in load_records(tmp_path / "a")} == {"oracle"}
    cfg.methods = ("gd",)
    with pytest.raises(geninv.GenInvError, match="gd is not available"):
        run_random_sweep(cfg, tmp_path / "b", progress=False, plots=False)
