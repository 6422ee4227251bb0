"""Experiment and study configuration (pydantic models, grid expansion, friendly errors)."""

from llem_bench.config.errors import ConfigError
from llem_bench.config.experiment import ExperimentConfig
from llem_bench.config.study import Study, load_study

__all__ = ["ConfigError", "ExperimentConfig", "Study", "load_study"]
