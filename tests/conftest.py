import os

# One thread by default: the problems in the suite are small, and on a 2-core machine torch's
# thread pool spinning against pytest's other work (or a second job) made solver tests up to
# 15x slower in wall time. Set GENINV_TEST_THREADS to override.
_THREADS = os.environ.get("GENINV_TEST_THREADS", "1")
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, _THREADS)
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(int(_THREADS))
