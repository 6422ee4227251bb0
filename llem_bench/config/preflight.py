"""Checks that need no model: run at collection so bad input fails before anything loads."""

from __future__ import annotations

from pathlib import Path

from llem_bench.config.context import check_fits, model_context
from llem_bench.config.errors import ConfigError
from llem_bench.config.study import Experiment
from llem_bench.workload.prompts import check_source
from llem_bench.workload.synthetic import is_synthetic, shape_name


def preflight(experiments: list[Experiment], source: str = "<study>") -> list[str]:
    """Raise ConfigError on the first experiment that cannot run; return notes on what could not be
    checked here (e.g. the context length of a Hugging Face model that is not in the local cache)."""
    checked: set[str] = set()
    contexts: dict[str, object] = {}
    notes: list[str] = []
    noted: set[str] = set()
    for exp in experiments:
        config = exp.config
        try:
            if is_synthetic(config.model):
                shape_name(config.model)
            elif config.model.startswith((".", "/", "~")) and not Path(config.model).expanduser().exists():
                raise ConfigError(f"model: local path {config.model!r} does not exist")
            _check_streaming(config)
            if config.workload.prompts not in checked:
                check_source(config.workload.prompts)
                checked.add(config.workload.prompts)
            if config.model not in contexts:
                contexts[config.model] = model_context(config.model)
            note = check_fits(config, contexts[config.model])
        except ConfigError as exc:
            raise ConfigError(f"{source}: experiment {exp.test_id}: {exc}") from None
        if note and config.model not in noted:  # one note per model
            noted.add(config.model)
            notes.append(f"{source}: experiment {exp.test_id}: {note}")
    return notes


def _check_streaming(config) -> None:
    """transformers refuses a streamer with beam search, and only after every cycle was measured."""
    beams = config.pytorch.num_beams if config.backend == "pytorch" and config.pytorch else 1
    if config.measurement.latency and beams and beams > 1:
        raise ConfigError(f"pytorch.num_beams: {beams} cannot be combined with measurement.latency: true "
                          "(transformers cannot stream beam search); set measurement.latency: false or "
                          "pytorch.num_beams: 1")
