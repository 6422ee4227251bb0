"""Scale out on existing engines: pytest-xdist workers on one node (gpus), deterministic study
shards (shard) joined afterwards (merge), and Slurm job arrays of shards (slurm)."""
