"""The noise-grid benchmark writes what it measured, where it was asked to."""

from __future__ import annotations

import json
from pathlib import Path

from geninv.bench.noise_grid import main


def test_noise_grid_writes_json_and_table_into_the_given_directory(tmp_path: Path) -> None:
    out = main(["--batch", "10", "--points", "clean", "--methods", "auto,oracle_e2e", "--out", str(tmp_path),
                "--no-progress"], echo=lambda s: None)
    assert out == tmp_path
    data = json.loads((tmp_path / "noise_grid.json").read_text())
    recs = data["runs"][0]["points"]["clean"]
    assert set(recs) == {"auto", "oracle_e2e"}
    # Clean signals: the default recovers every latent (exact path), like the Oracle.
    assert recs["auto"]["below_40"] == 0 and recs["auto"]["median"] > 100
    assert recs["oracle_e2e"]["time_ratio_to_reference"] == 1.0
    table = (tmp_path / "README_noise_grid.md").read_text()
    assert "| clean | auto |" in table and "python -m geninv.bench.noise_grid" in table


def test_time_to_target_is_read_from_the_traces_of_gd_and_auto(tmp_path: Path) -> None:
    main(["--batch", "10", "--points", "gauss30", "--methods", "auto,gd", "--out", str(tmp_path), "--no-progress",
          "--time-to-target", "--name", "ttt"], echo=lambda s: None)
    data = json.loads((tmp_path / "ttt.json").read_text())
    tt = data["runs"][0]["time_to_target"]["gauss30"]
    gd, auto = tt["methods"]["gd"], tt["methods"]["auto"]
    # The target is gd's final median: gd reaches it at the latest at its end, and a trace's first
    # point at or above it is when each method reaches it.
    assert tt["target_db"] == gd["trace"][-1][1]
    assert gd["seconds_to_target"] is not None and gd["seconds_to_target"] <= gd["seconds_total_traced"]
    for r in (gd, auto):
        ts = [t for t, _ in r["trace"]]
        assert ts == sorted(ts)
        if r["seconds_to_target"] is not None:
            first = next(t for t, v in r["trace"] if v >= tt["target_db"])
            assert r["seconds_to_target"] == first
    if auto["seconds_to_target"] is not None:
        assert auto["gd_time_to_target_ratio"] == gd["seconds_to_target"] / auto["seconds_to_target"]
    assert "Time to gd's final median" in (tmp_path / "README_ttt.md").read_text()
