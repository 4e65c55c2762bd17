"""Reproductions on executors: the same records as a serial run, and lossless resume after SIGKILL.

Worker processes are started with ``spawn``; they import this module by name (its directory is on
``sys.path`` under pytest) to run :func:`killing_trial`.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import pytest

from geninv.exceptions import InputError
from geninv.experiments.executors import ExecutorSpec, open_executor, parse_executor
from geninv.experiments.random_sweep import RandomSweepConfig, random_trial, random_units, run_random_sweep
from geninv.experiments.records import RecordStore, comparable, load_records, run_units
from test_experiments import wait_for_records

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "src" / "geninv" / "experiments"


def _cfg(trials: int = 2) -> RandomSweepConfig:
    """A tiny Fig. 4 sweep (n_0 = 4, n = 60; n_1 = 6 below the uniqueness line, 24 in the middle regime)."""
    cfg = RandomSweepConfig(n0=4, n=60, n1_values=(6, 24), trials=trials, certify=False,
                            methods=("oracle", "layered_bp", "latent_pursuit", "gd"))
    cfg.options["gd"] = {"debias": True, "max_iter": 300}
    return cfg


@pytest.fixture(scope="module")
def serial_ref(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    run_random_sweep(_cfg(3), out, progress=False, plots=False, executor="serial")
    return out


def _dask_or_skip() -> None:
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as e:
        pytest.skip(f"dask / distributed are not importable ({e}); they are the optional extra geninv[dask]")


# -- parsing --------------------------------------------------------------------------------------

def test_parse_executor_forms_and_errors() -> None:
    assert parse_executor(None) == parse_executor("serial") == ExecutorSpec("serial")
    assert parse_executor("processes:3") == ExecutorSpec("processes", workers=3)
    assert parse_executor("dask:local:2") == ExecutorSpec("dask", workers=2)
    assert parse_executor("dask:tcp://10.0.0.5:8786") == ExecutorSpec("dask", address="tcp://10.0.0.5:8786")
    for spec in ("processes:3", "dask:local:2", "dask:tcp://h:1", "serial"):
        assert str(parse_executor(spec)) == spec
    for bad in ("threads:2", "processes:0", "processes:x", "dask:local", "dask:", "dask:local:-1", ""):
        with pytest.raises(InputError, match="--executor: expected"):
            parse_executor(bad)


def test_cli_rejects_a_bad_executor_in_one_line(tmp_path, capsys) -> None:
    from geninv.cli import main

    assert main(["reproduce", "random", "--quick", "--executor", "processes:none", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--executor: expected a positive number of workers" in err and "Traceback" not in err


# -- the same records on every executor ----------------------------------------------------------

@pytest.mark.slow
def test_records_carry_the_thread_count_and_match_serial_on_processes(serial_ref, tmp_path) -> None:
    import torch

    ref = load_records(serial_ref)
    assert {r["threads"] for r in ref} == {torch.get_num_threads()}
    res = run_random_sweep(_cfg(3), tmp_path, progress=False, plots=False, executor="processes:2",
                           threads=torch.get_num_threads())
    assert res["ran"] == 6
    assert comparable(load_records(tmp_path)) == comparable(ref)


def test_quick_sweep_on_a_two_worker_dask_local_cluster_matches_serial(serial_ref, tmp_path) -> None:
    """CI's distributed check: a Dask LocalCluster of 2 worker processes, records identical to the serial run's."""
    _dask_or_skip()
    import torch

    assert {r["threads"] for r in load_records(serial_ref)} == {torch.get_num_threads()}
    res = run_random_sweep(_cfg(3), tmp_path, progress=False, plots=False, executor="dask:local:2",
                           threads=torch.get_num_threads())
    assert res["ran"] == 6
    got = load_records(tmp_path)
    assert len(got) == len(load_records(serial_ref)) == 24
    assert comparable(got) == comparable(load_records(serial_ref))


@pytest.mark.slow
def test_a_given_dask_client_executor_is_accepted(serial_ref, tmp_path) -> None:
    _dask_or_skip()
    import torch
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        run_random_sweep(_cfg(3), tmp_path / "a", progress=False, plots=False, executor=client.get_executor(),
                         threads=torch.get_num_threads())
        # The same scheduler by address, as on the command line (--executor dask:ADDRESS).
        run_random_sweep(_cfg(3), tmp_path / "b", progress=False, plots=False,
                         executor=f"dask:{cluster.scheduler_address}", threads=torch.get_num_threads())
    for d in ("a", "b"):
        assert comparable(load_records(tmp_path / d)) == comparable(load_records(serial_ref))


@pytest.mark.slow
def test_the_quick_fig4_sweep_on_dask_matches_serial(tmp_path) -> None:
    """The target: ``RandomSweepConfig.quick()`` (5 widths x 2 trials, 8 methods and the certificate) on a 2-worker
    LocalCluster gives the serial run's records."""
    _dask_or_skip()
    import torch

    t = torch.get_num_threads()
    run_random_sweep(RandomSweepConfig.quick(), tmp_path / "serial", progress=False, plots=False, threads=t)
    run_random_sweep(RandomSweepConfig.quick(), tmp_path / "dask", progress=False, plots=False,
                     executor="dask:local:2", threads=t)
    a, b = load_records(tmp_path / "serial"), load_records(tmp_path / "dask")
    assert len(a) == len(b) == 90 and comparable(a) == comparable(b)


# -- SIGKILL of a worker ---------------------------------------------------------------------------

def killing_trial(cfg: RandomSweepConfig, marker: str, unit, keys):
    """``random_trial``, except that the first process to reach unit ``n1=24/trial=1`` SIGKILLs itself."""
    if unit.name == "n1=24/trial=1":
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
    return random_trial(cfg, unit, keys)


@pytest.mark.parametrize("executor", ["processes:2", "dask:local:2"])
def test_sigkilled_worker_loses_nothing_and_the_run_completes(serial_ref, tmp_path, executor) -> None:
    if executor.startswith("dask"):
        _dask_or_skip()
    import torch

    cfg = _cfg(3)
    marker = tmp_path / "killed-once"
    out = tmp_path / "run"
    with RecordStore(out, "random", cfg.identity()) as store:
        ran = run_units(store, random_units(cfg, list(cfg.methods)), partial(killing_trial, cfg, str(marker)),
                        executor=executor, threads=torch.get_num_threads(), progress=False)
    assert marker.exists()  # a worker really died
    assert ran == 6  # every unit recorded once: the lost ones were run again, nothing twice
    final = load_records(out)
    assert len(final) == len({r["key"] for r in final})
    assert comparable(final) == comparable(load_records(serial_ref))


# -- SIGKILL of the driver ---------------------------------------------------------------------------

_DRIVER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_experiments_executors import _cfg
    from geninv.experiments.random_sweep import run_random_sweep
    # Sleep after each unit is on disk, so that the parent can SIGKILL the run mid-way.
    if __name__ == "__main__":
        run_random_sweep(_cfg(3), {out!r}, progress=False, plots=False, executor={executor!r}, threads=1,
                         callback=lambda u, n: time.sleep(0.5))
    """
)


@pytest.mark.parametrize("executor", ["processes:2", pytest.param("dask:local:2", marks=pytest.mark.slow)])
def test_sigkilled_driver_resumes_to_the_serial_records(serial_ref, tmp_path, executor) -> None:
    import torch

    if executor.startswith("dask"):
        _dask_or_skip()
    if torch.get_num_threads() != 1:
        pytest.skip("the reference run must use 1 torch thread (OMP_NUM_THREADS=1), as the killed run does")
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER.format(tests=str(REPO / "tests"), out=str(out),
                                                                 executor=executor)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    path = out / "records.jsonl"
    per_unit = len(_cfg().methods)
    try:
        wait_for_records(proc, path, 2 * per_unit)
        # The whole job dies at once: the driver and its worker processes.
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    before = load_records(out)
    assert 2 * per_unit <= len(before) < 6 * per_unit
    res = run_random_sweep(_cfg(3), out, progress=False, plots=False, executor=executor, threads=1)
    assert res["ran"] == 6 - len(before) // per_unit  # nothing already recorded is computed again
    final = load_records(out)
    assert len(final) == len({r["key"] for r in final}) == 6 * per_unit
    assert comparable(final) == comparable(load_records(serial_ref))


def test_pool_threads_default_and_validation() -> None:
    import torch

    with open_executor("serial") as pool:
        assert pool.threads == torch.get_num_threads() and pool.workers == 1
    with pytest.raises(InputError, match="threads: expected a positive number"):
        with open_executor("serial", threads=0):
            pass


# -- phase diagrams ---------------------------------------------------------------------------------

def _phase_cfg():
    from geninv.experiments.phase import parse_phase

    # n_1 = 4 < n_0 = 8: s_1 <= 4 < n_0 active units cannot determine z (W_1^{S_1} has fewer rows than
    # columns), so no method can succeed; n_1 = 48 with n_0 = 2 is deep in the unique regime.
    cfg = parse_phase("x=n1:4,24,48;y=n0:2,8;n=40;output=tanh;bias=0.1;weights=1/n_out", trials=2,
                      methods=("oracle", "latent_pursuit"))
    return cfg


def test_phase_diagram_records_heat_map_and_corollary_line(tmp_path) -> None:
    from geninv.experiments.phase import corollary1, corollary1_holds, run_phase, success_grid

    cfg = _phase_cfg()
    res = run_phase(cfg, tmp_path, progress=False)
    assert res["ran"] == 12 and (tmp_path / "phase_diagram.png").stat().st_size > 5000
    recs = load_records(tmp_path)
    assert len(recs) == 24
    for r in recs:
        assert r["success"] == (r["snr"] is not None and r["snr"]["z"] >= 60.0)
        assert r["dims"] == [r["n0"], r["n1"], 40]
    grid = success_grid(recs)
    for m in ("oracle", "latent_pursuit"):
        assert grid[m][(4.0, 8.0)] == [False, False]  # not identifiable: s_1 < n_0
    assert grid["oracle"][(48.0, 2.0)] == [True, True]
    cor = corollary1(recs, {"n": 40})
    assert cor["holds"][(4.0, 8.0)] is False and cor["holds"][(48.0, 2.0)] is False  # s_1 ~ 24 > n / 2 = 20
    assert all(s <= 4 for s in [r["s"][0] for r in recs if r["n1"] == 4])
    # Theorem 1 with Gaussian weights: wherever a trial's own cardinalities satisfy Corollary 1, the
    # Oracle's supported matrices have full column rank and its pseudo-inverses return z exactly.
    inside = [r for r in recs if r["method"] == "oracle" and corollary1_holds(r, 40)]
    assert len(inside) >= 2 and all(r["success"] for r in inside), [(r["s"], r["snr"]) for r in inside]
    md = (tmp_path / "summary.md").read_text()
    assert "| Oracle recovers z on every trial inside Corollary 1 (Theorem 1, Gaussian weights) | holds |" in md
    assert "Oracle: success rate" in md and "phase_diagram.png" in md
    assert run_phase(cfg, tmp_path, progress=False, plots=False)["ran"] == 0


@pytest.mark.slow
def test_phase_on_processes_matches_serial(tmp_path) -> None:
    import torch

    from geninv.experiments.phase import run_phase

    run_phase(_phase_cfg(), tmp_path / "a", progress=False, plots=False)
    run_phase(_phase_cfg(), tmp_path / "b", progress=False, plots=False, executor="processes:2",
              threads=torch.get_num_threads())
    assert comparable(load_records(tmp_path / "a")) == comparable(load_records(tmp_path / "b"))


def test_phase_over_measurements_and_depth_and_over_noise(tmp_path) -> None:
    from geninv.experiments.phase import parse_phase, run_phase

    cfg = parse_phase("x=m:12,40;y=depth:1,2;n0=3;n1=10;n=40;output=tanh", trials=1, methods=("oracle", "latent_pursuit"))
    run_phase(cfg, tmp_path / "cs", progress=False, plots=False)
    recs = load_records(tmp_path / "cs")
    assert len(recs) == 8 and {r["m"] for r in recs} == {12, 40}
    for r in recs:
        assert r["dims"] == [3, 10, 40] if r["depth"] == 1 else r["dims"] == [3, 10, 20, 40]
    cfg = parse_phase("x=snr_db:20,40;y=n0:2,3;n1=16;n=40", trials=1, methods=("oracle",))
    assert cfg.threshold(20.0) == 10.0 and cfg.threshold(None) == 60.0  # input SNR - 10 dB; 60 dB noiseless
    run_phase(cfg, tmp_path / "noise", progress=False)
    recs = load_records(tmp_path / "noise")
    assert len(recs) == 4
    assert all(r["success_db"] == r["snr_db"] - 10 and r["success"] == (r["snr"]["z"] >= r["snr_db"] - 10) for r in recs)
    assert "input SNR - 10 dB" in (tmp_path / "noise" / "summary.md").read_text()


def test_parse_phase_errors_name_the_key() -> None:
    from geninv.experiments.phase import parse_phase

    with pytest.raises(InputError, match="--phase: expected keys among"):
        parse_phase("width=3")
    with pytest.raises(InputError, match="--phase: expected a number"):
        parse_phase("n=abc")
    with pytest.raises(InputError, match="weights: expected one of"):
        parse_phase("weights=2/n")
    with pytest.raises(InputError, match="x, y: expected two different axes"):
        parse_phase("x=n0:1,2;y=n0:3")


# -- the registry: no circles, no private names across modules ----------------------------------------

def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """Every ``import`` in a file (top level and inside functions): (module, imported names)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names]))
            out += [(f"{node.module}.{a.name}", []) for a in node.names]  # "from pkg import module"
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def test_experiments_have_no_import_circle_and_share_no_private_names() -> None:
    mods = {p.stem: p for p in EXPERIMENTS.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for mod, names in _imports(path):
            if mod.startswith("geninv.experiments."):
                target = mod.split(".")[2]
                if target in mods and target != name:
                    deps.add(target)
                    private = [n for n in names if n.startswith("_")]
                    assert not private, f"{name} imports private names {private} from {target}"
        graph[name] = deps
    assert not ({"noise_exp", "cs_exp", "random_sweep", "mnist_exp", "inpaint", "phase"} & graph["report"]), graph["report"]

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for d in graph[node]:
                if d == start:
                    return path + [d]
                if d not in path:
                    stack.append((d, path + [d]))
        return None

    for m in graph:
        assert cycle_from(m) is None, f"import circle: {' -> '.join(cycle_from(m) or [])}"


def test_registry_knows_every_reproduction_and_the_report_dispatches_by_it() -> None:
    from geninv.experiments.registry import experiments, lookup

    names = [e.name for e in experiments()]
    ours = ["random", "mnist", "inpaint_random", "inpaint_block", "noise", "cs", "phase"]
    assert [n for n in names if n in ours] == ours  # every reproduction, in results-page order
    for e in experiments():
        assert callable(e.trial) and callable(e.units) and callable(e.section) and e.labels and e.colors
        assert e.trial.__qualname__ == e.trial.__name__  # module level: picklable by reference
    assert lookup("img_custom").name == "mnist"  # image experiments under a custom name use the image section


def test_a_task_pickles_small_whatever_the_record_store_holds(tmp_path) -> None:
    """What an executor ships per unit: the trial function by reference, the config, the unit and its keys."""
    import pickle

    from geninv.experiments.records import run_task

    cfg = _cfg(3)
    units = random_units(cfg, list(cfg.methods))
    with RecordStore(tmp_path, "random", cfg.identity()) as store:
        store.append([store.stamp({"key": f"filler/{i}", "kind": "filler", "blob": "x" * 1000}) for i in range(2000)])
        u = units[-1]
        task = pickle.dumps((run_task, partial(random_trial, cfg), u, store.missing(u.keys), 1))
    assert len(task) < 4000, len(task)  # 2 MB in the store, a few kB per task


@pytest.mark.slow
def test_image_noise_and_cs_units_on_processes_match_serial(tmp_path) -> None:
    import torch

    import geninv
    from geninv.experiments.cs_exp import CSConfig, run_cs
    from geninv.experiments.mnist_exp import ImageConfig, run_image_experiment
    from geninv.experiments.noise_exp import NoiseConfig, run_noise

    t = torch.get_num_threads()
    G = geninv.random_generator([5, 30, 90, 196], output="plu", seed=3, dtype=torch.float64)
    icfg = ImageConfig(images=4, batch=2, mask="random", methods=("oracle", "latent_pursuit"))
    ncfg = NoiseConfig(snr_db=(30,), images=2, batch=1, methods=("oracle", "latent_pursuit_auto"), bound_snr_db=(50,),
                       bound_trials=1, bound_dims=(3, 6, 60))
    ccfg = CSConfig(m_values=(40,), images=2, batch=1, methods=("latent_pursuit",))
    for ex in ("serial", "processes:2"):
        run_image_experiment(icfg, tmp_path / ex / "img", experiment="img", generator=G, progress=False, plots=False,
                             executor=ex, threads=t)
        run_noise(ncfg, tmp_path / ex / "noise", generator=G, progress=False, plots=False, executor=ex, threads=t)
        run_cs(ccfg, tmp_path / ex / "cs", generator=G, progress=False, plots=False, executor=ex, threads=t)
    for d in ("img", "noise", "cs"):
        a, b = load_records(tmp_path / "serial" / d), load_records(tmp_path / "processes:2" / d)
        assert a and comparable(a) == comparable(b), d
