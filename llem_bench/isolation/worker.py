"""Worker entry point: `python -m llem_bench.isolation.worker REQUEST.json RESULT.json`.

Runs one experiment in this interpreter (which may be another venv with its own backend pins)
and writes its ExperimentResult atomically. Exit 0 with status ok, 1 with a failed result.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from llem_bench.energy.meter import make_energy_meter
from llem_bench.harness.pool import BackendPool
from llem_bench.harness.runner import failed_result, run_experiment
from llem_bench.isolation.protocol import experiment_from_json
from llem_bench.results.store import write_json_atomic


def main(request_path: str, result_path: str) -> int:
    request = json.loads(open(request_path).read())
    experiment = experiment_from_json(request["experiment"])
    run_id, started = request["run_id"], request["started_at"]
    pool = BackendPool()
    try:
        backend, reused, load_s = pool.acquire(experiment.config)
        result = run_experiment(
            experiment, backend,
            lambda ordinals, sampler=None: make_energy_meter(experiment.config.measurement.energy, ordinals, sampler),
            run_id=run_id, started_at=started, model_reused=reused, load_s=load_s,
            idle_before_load=pool.idle_before_load,
            timeseries_dir=Path(request["timeseries_dir"]) if request.get("timeseries_dir") else None,
        )
        code = 0
    except Exception as exc:
        traceback.print_exc()
        result = failed_result(experiment, run_id, started, f"{type(exc).__name__}: {exc}")
        code = 1
    finally:
        pool.close()
    write_json_atomic(Path(result_path), result.model_dump(mode="json"))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
