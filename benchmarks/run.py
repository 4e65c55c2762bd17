"""Run the geninv benchmark: the same as ``geninv bench`` (all its flags work here).

    .venv/bin/python benchmarks/run.py [--quick] [--out benchmarks/results] [--batches 1,64,512,4096] ...

Writes benchmarks/results/bench.json, solvers.json and README.md (see geninv.bench.runner).
"""

import sys

from geninv.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
