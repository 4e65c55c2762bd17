"""Crash-safe trial records for the reproductions: one JSON line per finished trial.

A reproduction writes into one output directory:

``settings.json``
    The settings that determine every trial's result (written once, atomically: temporary
    file then ``os.replace``). A later run in the same directory must have the same settings,
    otherwise :class:`RecordStore` raises :class:`~geninv.exceptions.InputError` naming the
    differing keys. The *grid* (which trials to run: how many, which ``n_1``, which methods)
    is not part of them, so a run can be extended with more trials or methods.
``records.jsonl``
    One JSON object per line, each with a unique ``"key"``. Lines are appended with a single
    ``write`` followed by ``flush`` and ``os.fsync``, so after a crash (even ``SIGKILL`` or a
    power loss) the file holds whole records plus at most one torn last line; that line is
    detected (no trailing newline, or not valid JSON) and cut off when the store is opened.
``errors.jsonl``
    Trials whose method raised, with the message. They are not counted as done, so the next
    run retries them.
``records.csv``
    A flat copy of the records (written atomically by :meth:`RecordStore.write_csv`).

Only the driver (:func:`geninv.experiments.driver.run_units`) writes these files: trial units run on an executor (see
:mod:`geninv.experiments.executors`) and hand back their records and errors, which the driver
appends as each unit finishes.

Non-finite floats (an exact recovery has SNR ``+inf``) are stored as the strings ``"inf"``,
``"-inf"`` and ``"nan"`` so that the files stay strict JSON; :func:`load_records` turns them
back into floats.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geninv.exceptions import GenInvError, InputError
from geninv.experiments.driver import Unit, UnitResult, iter_chunks, run_task, run_units

# Unit, UnitResult, run_units, run_task and iter_chunks live in the driver module and are re-exported here.
__all__ = [
    "RecordStore", "Unit", "UnitResult", "run_units", "run_task", "load_records", "derive_seed", "atomic_write_text",
    "encode_array", "decode_array", "TIMING_FIELDS", "comparable", "snr_value", "read_settings", "code_fingerprint",
    "iter_chunks",
]

#: Fields that legitimately differ between two runs of the same trial: wall-clock timings, and the
#: fingerprint of the sources (a run resumed after an unrelated edit elsewhere in the package).
TIMING_FIELDS = frozenset({"seconds", "certify_seconds", "code"})

RECORDS = "records.jsonl"
ERRORS = "errors.jsonl"
SETTINGS = "settings.json"
LOCK = ".lock"


# -- small helpers -----------------------------------------------------------------------

def derive_seed(base: int, *parts: int | str) -> int:
    """A 31-bit seed derived deterministically from ``base`` and ``parts``.

    Strings are mapped by CRC-32 (stable across Python processes, unlike ``hash``). Trials get
    independent streams whatever the grid size, so extending a run never changes old trials.
    """
    ints = [int(base) & 0xFFFFFFFF]
    for p in parts:
        ints.append(zlib.crc32(p.encode()) if isinstance(p, str) else int(p) & 0xFFFFFFFF)
    return int(np.random.SeedSequence(ints).generate_state(1, dtype=np.uint32)[0] >> 1)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file, fsync, then ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _encode(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        f = float(v)
        if math.isfinite(f):
            return f
        return "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, dict):
        return {str(k): _encode(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_encode(x) for x in v]
    return v


_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _decode(v: Any) -> Any:
    if isinstance(v, str) and v in _NONFINITE:
        return _NONFINITE[v]
    if isinstance(v, dict):
        return {k: _decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


def encode_array(a: Any, dtype: str = "float16") -> dict[str, Any]:
    """A compact JSON form of a small array (images in records): base64 of ``dtype`` bytes."""
    import base64

    arr = np.asarray(a)
    if dtype == "bits":
        payload = np.packbits(arr.astype(bool).ravel())
    else:
        payload = arr.astype(dtype).ravel()
    return {"dtype": dtype, "shape": list(arr.shape), "b64": base64.b64encode(payload.tobytes()).decode("ascii")}


def decode_array(d: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_array` (returns float32, or bool for ``"bits"``)."""
    import base64

    raw = base64.b64decode(d["b64"])
    shape = tuple(d["shape"])
    size = int(np.prod(shape)) if shape else 1
    if d["dtype"] == "bits":
        return np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:size].astype(bool).reshape(shape)
    return np.frombuffer(raw, dtype=d["dtype"]).astype(np.float32).reshape(shape)


def comparable(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Records keyed by ``key`` without :data:`TIMING_FIELDS`: two runs of the same trials compare equal."""
    return {r["key"]: {k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records}


def snr_value(v: Any) -> float:
    """An SNR for statistics: a NaN (the method returned NaN) counts as a total failure, ``-inf``."""
    f = float(v)
    return -math.inf if math.isnan(f) else f


def read_settings(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``{"experiment": ..., "settings": {...}}`` stored in ``out_dir/settings.json``."""
    path = Path(out_dir) / SETTINGS
    try:
        return dict(_decode(json.loads(path.read_text(encoding="utf-8"))))
    except (OSError, ValueError) as e:
        raise InputError(f"out_dir: expected a readable {path}, received an error ({e})") from None


_CODE_ID: str | None = None


def code_fingerprint() -> str:
    """A short hash of the installed ``geninv`` sources (every ``.py`` file), stamped on each record.

    Resuming with changed code is allowed (a fix elsewhere must not throw away finished
    trials) but is reported, and the report lists how many fingerprints the records carry.
    """
    global _CODE_ID
    if _CODE_ID is None:
        import geninv

        root = Path(geninv.__file__).parent
        h = hashlib.sha256()
        for p in sorted(root.rglob("*.py")):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
        _CODE_ID = h.hexdigest()[:12]
    return _CODE_ID


def _settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(_encode(settings), sort_keys=True).encode()).hexdigest()[:16]


# -- reading -------------------------------------------------------------------------------

def _parse_lines(data: bytes, path: Path) -> tuple[list[dict[str, Any]], int]:
    """Parse whole lines; return the records and the byte length of the valid prefix.

    A torn last line (no newline, or an invalid JSON object on the last line) is excluded
    from the prefix; an invalid line anywhere else is corruption and raises.
    """
    records: list[dict[str, Any]] = []
    pos = 0
    lines = data.split(b"\n")
    # Everything after the last newline is an unfinished write.
    complete, tail = lines[:-1], lines[-1]
    valid_end = 0
    for i, line in enumerate(complete):
        end = pos + len(line) + 1
        if line.strip():
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or "key" not in rec:
                    raise ValueError("not a record object with a 'key'")
            except ValueError as e:
                if i == len(complete) - 1 and not tail:
                    # The last line ended with a newline but is garbage: a torn write whose
                    # newline landed; treat like any torn tail.
                    return records, valid_end
                raise InputError(
                    f"records: expected one JSON record per line in {path}, received an unreadable line {i + 1} "
                    f"({e}); the file is corrupt beyond a torn last line — move it away to start afresh"
                ) from None
            records.append(_decode(rec))
        pos = end
        valid_end = end
    return records, valid_end


def load_records(out_dir: str | os.PathLike[str], *, kind: str | None = None) -> list[dict[str, Any]]:
    """All whole records of ``out_dir/records.jsonl`` (a torn last line is ignored, not removed).

    Parameters
    ----------
    kind : str, optional
        Keep only records whose ``"kind"`` equals this (e.g. ``"solve"`` or ``"certify"``).
    """
    path = Path(out_dir) / RECORDS
    if not path.exists():
        raise InputError(f"out_dir: expected a reproduction directory containing {RECORDS}, received {out_dir}")
    records, _ = _parse_lines(path.read_bytes(), path)
    if kind is not None:
        records = [r for r in records if r.get("kind") == kind]
    return records


# -- the store -----------------------------------------------------------------------------

class RecordStore:
    """The records of one reproduction directory, opened for appending.

    Parameters
    ----------
    out_dir : path
        Created if missing.
    experiment : str
        Name stored in ``settings.json`` (``"random"``, ``"mnist"``, ``"inpaint"``).
    settings : dict
        Everything that determines a trial's result (JSON-serialisable). Must equal the stored
        settings of an existing directory.

    Raises
    ------
    InputError
        On a settings mismatch, a corrupt record file, or another run holding the directory.

    Notes
    -----
    Opening cuts a torn last line of ``records.jsonl`` (left by a killed run) so that new
    records start on a fresh line. A POSIX advisory lock (``fcntl.flock`` on ``.lock``) keeps
    two runs from appending to the same directory; the kernel drops it when a process dies.
    """

    def __init__(self, out_dir: str | os.PathLike[str], experiment: str, settings: dict[str, Any]) -> None:
        from geninv.version import __version__

        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.experiment = experiment
        self.settings = _decode(json.loads(json.dumps(_encode(settings))))
        self.settings_hash = _settings_hash(settings)
        self.version = __version__
        self._lock_fd = self._acquire_lock()
        try:
            self._check_settings()
            self.dropped_torn_line = False
            self.other_code: list[str] = []
            self._records: dict[str, dict[str, Any]] = {}
            self._load()
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------
    def _acquire_lock(self) -> int:
        import fcntl

        fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(
                f"out: expected a directory no other run is writing to, received {self.dir} which is locked by "
                "another running reproduction"
            ) from None
        return fd

    def _check_settings(self) -> None:
        path = self.dir / SETTINGS
        mine = {"experiment": self.experiment, "settings": self.settings}
        if not path.exists():
            if (self.dir / RECORDS).exists():
                raise InputError(f"out: {self.dir} has records but no {SETTINGS}; refusing to mix runs, use another --out")
            atomic_write_text(path, json.dumps(_encode(mine), indent=2, sort_keys=True) + "\n")
            return
        try:
            theirs = _decode(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise InputError(f"out: expected a readable {SETTINGS} in {self.dir}, received an unreadable file ({e})") from None
        if theirs.get("experiment") != self.experiment:
            raise InputError(
                f"out: expected a directory of the {self.experiment!r} reproduction, received {self.dir} which holds "
                f"{theirs.get('experiment')!r}; use another --out"
            )
        old, new = theirs.get("settings", {}), self.settings
        # Method options are checked per method against the records (check_method_options), so
        # that adding a method to a finished run is allowed; older settings files held them here.
        diff = sorted(k for k in (set(old) | set(new)) - {"options"}
                      if old.get(k, "<absent>") != new.get(k, "<absent>"))
        if diff:
            parts = "; ".join(f"{k}: stored {old.get(k, '<absent>')!r}, this run {new.get(k, '<absent>')!r}" for k in diff)
            raise InputError(
                f"settings: expected the settings stored in {self.dir / SETTINGS}, received different ones ({parts}); "
                "use another --out, or delete that directory to start over"
            )

    def _load(self) -> None:
        path = self.dir / RECORDS
        if not path.exists():
            return
        data = path.read_bytes()
        records, valid_end = _parse_lines(data, path)
        if valid_end < len(data):
            # A killed run left half a line: drop it so the next append starts clean.
            with open(path, "r+b") as f:
                f.truncate(valid_end)
                f.flush()
                os.fsync(f.fileno())
            self.dropped_torn_line = True
        for r in records:
            self._records[r["key"]] = r
        self.other_code = sorted({str(r.get("code")) for r in records} - {code_fingerprint()})

    # -- use ---------------------------------------------------------------------------
    @property
    def records(self) -> list[dict[str, Any]]:
        return list(self._records.values())

    def done(self, key: str) -> bool:
        return key in self._records

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self._records]

    def check_method_options(self, options: dict[str, dict[str, Any]]) -> None:
        """Refuse to resume a method whose records were made with other options.

        ``options`` maps each method this run will use to its options; a record's ``"options"``
        is compared without ``"seed"`` (derived per trial, not a setting).

        Raises
        ------
        InputError
            Naming the method, the stored and the new options.
        """
        mine = {m: _decode(json.loads(json.dumps(_encode({k: v for k, v in o.items() if k != "seed"}))))
                for m, o in options.items()}
        bad: dict[str, tuple[Any, Any]] = {}
        for r in self._records.values():
            m = r.get("method")
            if r.get("kind") != "solve" or m not in mine or m in bad:
                continue
            stored = {k: v for k, v in (r.get("options") or {}).items() if k != "seed"}
            if stored != mine[m]:
                bad[m] = (stored, mine[m])
        if bad:
            parts = "; ".join(f"{m}: stored {a!r}, this run {b!r}" for m, (a, b) in sorted(bad.items()))
            raise InputError(
                f"settings: expected the method options the records in {self.dir} were made with, received different "
                f"ones ({parts}); use another --out, or delete that directory to start over"
            )

    def stamp(self, record: dict[str, Any]) -> dict[str, Any]:
        """Add the fields every record carries (experiment, library version, settings hash)."""
        out = {"experiment": self.experiment, "version": self.version, "settings_hash": self.settings_hash,
               "code": code_fingerprint()}
        out.update(record)
        return out

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Append records durably: one ``write``, then ``flush`` and ``fsync``."""
        if not records:
            return
        lines = []
        for r in records:
            if "key" not in r:
                raise GenInvError("internal: a record without 'key'")
            if r["key"] in self._records:
                raise GenInvError(f"internal: record {r['key']!r} written twice")
            lines.append(json.dumps(_encode(r), sort_keys=True, allow_nan=False))
        blob = ("\n".join(lines) + "\n").encode("utf-8")
        with open(self.dir / RECORDS, "ab") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        for r in records:
            self._records[r["key"]] = _decode(json.loads(json.dumps(_encode(r))))

    def log_error(self, key: str, message: str) -> None:
        """Note a trial whose method raised; it stays undone and is retried by the next run."""
        line = json.dumps({"key": key, "error": message, "version": self.version}, sort_keys=True) + "\n"
        with open(self.dir / ERRORS, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def write_csv(self, name: str = "records.csv") -> Path:
        """A flat CSV of the records (nested dicts become ``a.b`` columns; arrays are left out)."""
        rows = [_flatten(r) for r in self.records]
        cols: list[str] = []
        for r in rows:
            for c in r:
                if c not in cols:
                    cols.append(c)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
        path = self.dir / name
        atomic_write_text(path, buf.getvalue())
        return path

    def close(self) -> None:
        if getattr(self, "_lock_fd", None) is not None:
            os.close(self._lock_fd)
            self._lock_fd = None  # type: ignore[assignment]

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _flatten(r: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in r.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            if "b64" in v:
                continue
            out.update(_flatten(v, name + "."))
        elif isinstance(v, list):
            out[name] = json.dumps(_encode(v))
        else:
            out[name] = v
    return out
