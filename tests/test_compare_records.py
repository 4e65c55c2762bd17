"""scripts/compare_records.py: equal result trees compare equal whatever their timings and paths; one
changed digit of a record, a changed verdict or a missing directory is reported."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from geninv.experiments.records import RecordStore

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_records.py"


def _script():
    spec = importlib.util.spec_from_file_location("compare_records", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def _tree(root: Path, snr: float, seconds: float, verdict: str = "holds") -> Path:
    d = root / "random"
    with RecordStore(d, "random", {"n0": 10, "n": 300, "seed": 0}) as store:
        store.append([store.stamp({"key": f"n1=15/trial={t}/oracle", "kind": "solve", "method": "oracle",
                                   "snr": {"z": snr + t}, "seconds": seconds}) for t in range(2)])
        store.write_csv()
    (d / "summary.json").write_text(json.dumps({"title": "t", "command": f"geninv reproduce random --out {d}",
                                                "claims": [{"claim": "z above 60 dB", "verdict": verdict,
                                                            "evidence": f"15: {snr:.1f}"}]}))
    return root


def test_equal_trees_compare_equal_and_one_digit_does_not(tmp_path, capsys):
    cmp = _script()
    a = _tree(tmp_path / "a", 300.25, seconds=0.5)
    assert cmp.main([str(a), str(_tree(tmp_path / "b", 300.25, seconds=9.0))]) == 0  # timings and paths aside
    assert cmp.main([str(a), str(_tree(tmp_path / "c", 300.26, seconds=0.5))]) == 1
    out = capsys.readouterr().out
    assert "random: 2 records, 2 CSV rows, 1 claims: equal" in out
    assert "records.jsonl n1=15/trial=0/oracle.snr.z: 300.25 != 300.26" in out
    assert "records.csv n1=15/trial=0/oracle.snr.z: '300.25' != '300.26'" in out
    assert "evidence: numbers ['15', '300.2'] != ['15', '300.3']" in out


def test_a_changed_verdict_or_a_missing_directory_is_reported(tmp_path, capsys):
    cmp = _script()
    a = _tree(tmp_path / "a", 300.0, seconds=0.5)
    assert cmp.main([str(a), str(_tree(tmp_path / "b", 300.0, seconds=0.5, verdict="does not hold"))]) == 1
    assert "verdict 'holds' != 'does not hold'" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "b" / "random")
    assert cmp.main([str(a), str(tmp_path / "b")]) == 2
