import os

import torch

# Two cores in CI: keep torch from oversubscribing, and make float64 reductions deterministic.
torch.set_num_threads(int(os.environ.get("GENINV_TEST_THREADS", "2")))
os.environ.setdefault("MPLBACKEND", "Agg")
