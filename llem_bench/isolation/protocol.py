"""The request a worker receives: the experiment (config, explicit settings, id) and run identity."""

from __future__ import annotations

from typing import Any

from llem_bench.config.experiment import ExperimentConfig
from llem_bench.config.study import Experiment


def experiment_to_json(experiment: Experiment) -> dict[str, Any]:
    # Only what was set: a full dump would set every field and trip "only with preset: sampling" checks.
    return {"test_id": experiment.test_id, "config": experiment.config.model_dump(mode="json", exclude_unset=True),
            "explicit": experiment.explicit, "swept": experiment.swept,
            "repeat": experiment.repeat, "repeats": experiment.repeats}


def experiment_from_json(data: dict[str, Any]) -> Experiment:
    return Experiment(test_id=data["test_id"], config=ExperimentConfig.model_validate(data["config"]),
                      explicit=data["explicit"], swept=data.get("swept", {}),
                      repeat=data.get("repeat"), repeats=data.get("repeats", 1))
