"""Started under torchrun by the tp_plan / tp_size wiring checks: load the real backend with the
study settings given as JSON, run one pass, and print (rank 0) what transformers used."""

import json
import os
import sys

from llem_bench.backends.pytorch import PyTorchBackend
from llem_bench.config.study import parse_study
from llem_bench.workload.prompts import prepare_workload

config = parse_study(json.loads(sys.argv[1]))[1][0].config
backend = PyTorchBackend()
try:
    backend.load(config)
except Exception as exc:  # e.g. transformers refusing a tp_size the launch does not have
    if os.environ["RANK"] == "0":  # every rank raises: one report
        print("WIRING " + json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
    sys.exit(0)
backend.configure(config)
if backend.ranks.leader:
    tokens = backend.run_pass(prepare_workload(config.workload, backend.tokenizer)).output_tokens
    effective = backend.effective_config()
    print("WIRING " + json.dumps({"world_size": effective["tensor_parallel"]["world_size"],
                                  "tp_size": getattr(backend.model, "tp_size", None),
                                  "sharded": effective["tensor_parallel"]["local_parameters"] < effective["parameters"],
                                  "tokens": tokens}), flush=True)
else:
    backend.follow_leader()
backend.close()
