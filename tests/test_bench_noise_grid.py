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
