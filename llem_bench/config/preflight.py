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
    entry_points = _entry_point_note(experiments)
    return notes + ([f"{source}: {entry_points}"] if entry_points else [])


def _entry_point_note(experiments: list[Experiment]) -> str | None:
    """vLLM resolves an unset step token budget by entry point (offline LLM 16384, its server and the
    suite's in-process engine 8192 on an H100/H200): offline and serving results of one study then run
    different schedulers, which an H200 run mistook for a measurement difference at first."""
    vllm = [e.config for e in experiments if e.config.backend == "vllm" and e.config.vllm is not None]
    scenarios = {"offline" if c.scenario == "offline" else "serving" for c in vllm}
    if len(scenarios) < 2 or all(c.vllm.max_num_batched_tokens is not None for c in vllm):
        return None
    return ("offline and serving vLLM experiments leave vllm.max_num_batched_tokens unset: vLLM resolves it per "
            "entry point (offline LLM 16384, server 8192 on an H100/H200), so they would run different "
            "schedulers; set vllm.max_num_batched_tokens to compare them like for like (results record what each "
            "engine resolved in effective.scheduler)")


def _check_streaming(config) -> None:
    """transformers refuses a streamer with beam search, and only after every cycle was measured."""
    beams = config.pytorch.num_beams if config.backend == "pytorch" and config.pytorch else 1
    if config.measurement.latency and beams and beams > 1:
        raise ConfigError(f"pytorch.num_beams: {beams} cannot be combined with measurement.latency: true "
                          "(transformers cannot stream beam search); set measurement.latency: false or "
                          "pytorch.num_beams: 1")
