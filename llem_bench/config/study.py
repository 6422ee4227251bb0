"""Study YAML: shared defaults, per-backend defaults, a Cartesian sweep and explicit extra points,
expanded into validated experiments with stable, `-k`-friendly test ids."""

from __future__ import annotations

import copy
import itertools
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator

from llem_bench.config.backends import BACKENDS, SECTION_MODELS
from llem_bench.config.base import StrictModel
from llem_bench.config.errors import ConfigError, did_you_mean, format_validation_error
from llem_bench.config.experiment import DTYPE_SHORT, RUN_LEVEL_MEASUREMENT, ExperimentConfig, config_hash
from llem_bench.results.schema import repeat_key

SECTIONS = ("workload", "decoding", "measurement", "serving")
TOP_LEVEL_AXES = ("backend", "model", "dtype", "scenario")


class GateSpec(StrictModel):
    """Allowed change of one metric against a baseline, e.g. {max_increase: 5%}."""

    max_increase: Optional[str] = None
    max_decrease: Optional[str] = None

    @field_validator("max_increase", "max_decrease", mode="before")
    @classmethod
    def _percent(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).strip()
        if not re.fullmatch(r"\d+(\.\d+)?%", text):
            raise ValueError(f"expected a percentage such as 5%, got {value!r}")
        return text


class ClusterSpec(StrictModel):
    """How `llem-bench submit --slurm` runs the study: one Slurm array task per shard. Every field can
    be overridden on the command line (`llem-bench submit --help`)."""

    shards: Optional[int] = Field(None, ge=1, description="array tasks (default: one per load group)")
    partition: Optional[str] = Field(None, description="sbatch --partition")
    time: Optional[str] = Field(None, pattern=r"^(\d+-)?\d+(:\d{2}){0,2}$",
                                description="sbatch --time per shard, e.g. 30, 2:00:00 or 1-00:00:00")
    gpus_per_task: int = Field(0, ge=0, description="GPUs each shard gets (sbatch --gpus-per-task; 0: none)")
    gpus_per_worker: Optional[int] = Field(None, ge=1, description="run each shard with pytest-xdist, "
                                           "gpus_per_task / gpus_per_worker workers of this many GPUs")
    cpus_per_task: Optional[int] = Field(None, ge=1, description="sbatch --cpus-per-task")
    mem: Optional[str] = Field(None, pattern=r"^\d+[KMGT]?$", description="sbatch --mem, e.g. 64G")
    python: Optional[str] = Field(None, description="interpreter that runs pytest on the nodes, e.g. a venv's "
                                  "bin/python (default: the one running llem-bench submit)")
    launcher: Optional[str] = Field(None, description="command prefix on the nodes, e.g. "
                                    "'apptainer exec --nv llem.sif' (the container's python runs pytest)")
    sbatch_args: list[str] = Field(default_factory=list, description="extra sbatch flags, e.g. [--account=x]")
    pytest_args: list[str] = Field(default_factory=list, description="extra pytest arguments, e.g. [-k, bf16]")
    benchmarks: str = Field("benchmarks", description="the benchmark tests pytest runs")

    @field_validator("gpus_per_worker")
    @classmethod
    def _divides(cls, value: Optional[int], info: Any) -> Optional[int]:
        gpus = info.data.get("gpus_per_task", 0)
        if value is not None and (gpus < value or gpus % value):
            raise ValueError(f"must divide gpus_per_task ({gpus}): each shard runs gpus_per_task / gpus_per_worker "
                             "xdist workers")
        return value


class Study(StrictModel):
    study: str = Field(description="Study name; used for the output folder.", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    model: Optional[str] = None
    backend: Optional[str] = None
    dtype: Optional[str] = None
    workload: dict[str, Any] = Field(default_factory=dict)
    decoding: dict[str, Any] = Field(default_factory=dict)
    measurement: dict[str, Any] = Field(default_factory=dict)
    scenario: Optional[str] = None
    serving: dict[str, Any] = Field(default_factory=dict)
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    experiments: list[dict[str, Any]] = Field(default_factory=list)
    gates: dict[str, Any] = Field(
        default_factory=dict, description="metric -> {max_increase|max_decrease: 5%}, and on_inconclusive: fail|warn")
    runners: dict[str, str] = Field(default_factory=dict)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec, description="Slurm submission (llem-bench submit)")

    @field_validator("gates", mode="before")
    @classmethod
    def _gates(cls, value: Any) -> Any:
        """on_inconclusive: fail|warn; every other key a metric of the registry with a GateSpec."""
        from llem_bench.metrics import METRICS

        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for key, spec in value.items():
            if key == "on_inconclusive":
                if spec not in ("fail", "warn"):
                    raise ValueError(f"gates.on_inconclusive: expected fail or warn, got {spec!r}")
                out[key] = spec
                continue
            if key not in METRICS:
                raise ValueError(f"gates.{key}: unknown metric.{did_you_mean(str(key), [*METRICS, 'on_inconclusive'])} "
                                 f"Metrics: {', '.join(METRICS)}; or on_inconclusive: fail|warn")
            try:
                out[key] = GateSpec.model_validate(spec or {})
            except ValidationError as exc:
                raise ValueError(f"gates.{key}: {exc.errors()[0]['msg']} (e.g. {{max_decrease: 5%}})") from None
        return out

    # Where the study came from, for error messages (not a YAML key).
    _source: str = PrivateAttr("<study>")

    @property
    def source(self) -> str:
        return self._source

    @property
    def repeats(self) -> int:
        return int(self.measurement.get("repeats", 1))

    @property
    def repeat_seed(self) -> int:
        return int(self.measurement.get("repeat_seed", 0))


@dataclass
class Experiment:
    """One grid point: its validated config, the settings the user wrote, and its test id."""

    test_id: str
    config: ExperimentConfig
    explicit: dict[str, Any]
    swept: dict[str, Any] = field(default_factory=dict)
    repeat: Optional[int] = None  # 1-based run-level repeat; None when the study has repeats: 1
    repeats: int = 1

    @property
    def backend(self) -> str:
        return self.config.backend

    @property
    def key(self) -> str:
        """pytest param id and result file name: `<test_id>-r<k>` with repeats, else the test id."""
        return repeat_key(self.test_id, self.repeat)

    @property
    def config_hash(self) -> str:
        return self.test_id.rsplit("-", 1)[-1]


def load_study(path: str | Path) -> tuple[Study, list[Experiment]]:
    """Read, validate and expand a study file. Raises ConfigError with a user-facing message."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_study(raw, source=str(path))


def parse_study(raw: Any, source: str = "<study>") -> tuple[Study, list[Experiment]]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a study is a YAML mapping with at least a 'study: <name>' key")
    try:
        study = Study.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, Study, _join, source)) from None
    study._source = source
    return study, expand(study)


def expand(study: Study) -> list[Experiment]:
    src = study.source
    for name in study.backends:
        if name not in BACKENDS:
            raise ConfigError(f"{src}: backends.{name}: unknown backend.{did_you_mean(name, list(BACKENDS))} "
                              f"Allowed: {', '.join(BACKENDS)}.")
    for key, values in study.sweep.items():
        _check_axis(src, key, values)
    _check_run_level(study)

    backends = _backends_to_run(study)
    for key in study.sweep:
        scope = key.split(".")[0]
        if scope in BACKENDS and scope not in backends:
            raise ConfigError(f"{src}: sweep.{key}: applies to backend '{scope}', which this study does not run "
                              f"(it runs: {', '.join(backends)}). Add it to sweep.backend or remove the axis.")

    base: dict[str, Any] = {"study": study.study}
    provenance: dict[str, str] = {}
    for key in ("model", "dtype", "scenario"):
        if getattr(study, key) is not None:
            base[key] = getattr(study, key)
            provenance[key] = key
    for section in SECTIONS:
        if getattr(study, section):
            base[section] = copy.deepcopy(getattr(study, section))
            provenance[section] = section

    experiments: list[Experiment] = []
    # Without a sweep, explicit experiments replace the single default point instead of adding to it.
    grid_backends = backends if study.sweep or not study.experiments else []
    for backend in grid_backends:
        axes = [(k, v) for k, v in study.sweep.items() if k != "backend" and k.split(".")[0] in (*SECTIONS, *TOP_LEVEL_AXES, backend)]
        for combo in itertools.product(*(range(len(v)) for _, v in axes)):
            raw = _with_backend(base, study, backend)
            prov = dict(provenance, **{backend: f"backends.{backend}"})
            swept = {}
            for (key, values), index in zip(axes, combo):
                _set_dotted(raw, key, values[index])
                prov[key] = f"sweep['{key}'][{index}]"
                swept[key] = values[index]
            _require_model(src, raw, "model")
            experiments.append(_build(src, raw, prov, swept))
    for i, extra in enumerate(study.experiments):
        backend = extra.get("backend") or backends[0]
        raw = _with_backend(base, study, backend)
        prov = dict(provenance, **{backend: f"backends.{backend}"})
        for key, value in _flatten(extra):
            _set_dotted(raw, key, value)
            prov[key] = f"experiments[{i}].{key}"
        _require_model(src, raw, f"experiments[{i}].model")
        experiments.append(_build(src, raw, prov, dict(_flatten(extra))))

    _check_unique(src, experiments)
    return experiments


def _check_run_level(study: Study) -> None:
    """measurement.repeats / repeat_seed apply to the whole study: only the study's measurement section
    may set them (a per-experiment value would make repeats of one experiment a different experiment)."""
    for name in RUN_LEVEL_MEASUREMENT:
        if f"measurement.{name}" in study.sweep:
            raise ConfigError(f"{study.source}: sweep.measurement.{name}: {name} is a run-level setting, the same "
                              f"for every experiment; set it once under the study's measurement: section")
        for i, extra in enumerate(study.experiments):
            if isinstance(extra.get("measurement"), dict) and name in extra["measurement"]:
                raise ConfigError(f"{study.source}: experiments[{i}].measurement.{name}: {name} is a run-level "
                                  f"setting, the same for every experiment; set it once under the study's "
                                  f"measurement: section")
        for backend, section in study.backends.items():
            if isinstance(section, dict) and isinstance(section.get("measurement"), dict) \
                    and name in section["measurement"]:
                raise ConfigError(f"{study.source}: backends.{backend}.measurement.{name}: set it once under "
                                  f"the study's measurement: section")
def _require_model(src: str, raw: dict, where: str) -> None:
    """No silent default model: a study that forgot `model:` would otherwise measure a toy."""
    if raw.get("model") is None:
        raise ConfigError(
            f"{src}: {where}: required: name the model to run, at the top level (model: ...), as a sweep axis "
            "(sweep: {model: [...]}) or in every experiment. Add `model: synthetic:tiny` for the CPU quickstart, "
            "or a synthetic shape (synthetic:llama-1b, ...), a Hugging Face id or a local path.")


def _backends_to_run(study: Study) -> list[str]:
    if "backend" in study.sweep:
        return list(dict.fromkeys(study.sweep["backend"]))
    if study.backend:
        _check_axis(study.source, "backend", [study.backend])
        return [study.backend]
    if len(study.backends) == 1:
        return list(study.backends)
    return ["pytorch"]


def _check_axis(src: str, key: str, values: list[Any]) -> None:
    if not values:
        raise ConfigError(f"{src}: sweep.{key}: empty list; give at least one value or remove the axis")
    if key == "backend":
        for v in values:
            if v not in BACKENDS:
                raise ConfigError(f"{src}: sweep.backend: unknown backend {v!r}.{did_you_mean(str(v), list(BACKENDS))} "
                                  f"Allowed: {', '.join(BACKENDS)}.")
        return
    parts = key.split(".")
    if len(parts) == 1:
        if key in TOP_LEVEL_AXES:
            return
        allowed = list(TOP_LEVEL_AXES) + [f"{s}.<field>" for s in (*SECTIONS, *BACKENDS)]
        raise ConfigError(f"{src}: sweep.{key}: unknown axis.{did_you_mean(key, list(TOP_LEVEL_AXES))} "
                          f"Axes are {', '.join(allowed)}.")
    if parts[0] not in (*SECTIONS, *BACKENDS):
        raise ConfigError(f"{src}: sweep.{key}: unknown section '{parts[0]}'."
                          f"{did_you_mean(parts[0], [*SECTIONS, *BACKENDS])} Sections: {', '.join((*SECTIONS, *BACKENDS))}.")
    model: Any = SECTION_MODELS.get(parts[0]) or _unwrap_optional(ExperimentConfig.model_fields[parts[0]].annotation)
    for depth, part in enumerate(parts[1:], start=1):
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            where = ".".join(parts[:depth])
            raise ConfigError(f"{src}: sweep.{key}: '{where}' has no field '{part}'.{did_you_mean(part, list(fields))} "
                              f"Fields: {', '.join(fields)}.")
        model = _unwrap_optional(fields[part].annotation)


def _unwrap_optional(annotation: Any) -> Any:
    """Optional[Section] -> Section, so sweep paths into optional sections (serving.rate) are checked."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    models = [a for a in args if hasattr(a, "model_fields")]
    return models[0] if models else annotation


def _with_backend(base: dict, study: Study, backend: str) -> dict:
    raw = copy.deepcopy(base)
    raw["backend"] = backend
    raw[backend] = copy.deepcopy(study.backends.get(backend, {}))
    return raw


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {key}: '{part}' is not a section")
    node[parts[-1]] = value


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in d.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and key != "passthrough" and value:
            out.extend(_flatten(value, dotted + "."))
        else:
            out.append((dotted, value))
    return out


def _build(src: str, raw: dict, prov: dict[str, str], swept: dict[str, Any]) -> Experiment:
    def where(loc: tuple) -> str:
        dotted = [str(p) for p in loc]
        for n in range(len(dotted), 0, -1):
            prefix = ".".join(dotted[:n])
            if prefix in prov:
                rest = ".".join(dotted[n:])
                return prov[prefix] + (f".{rest}" if rest and not prov[prefix].startswith(("sweep", "experiments")) else "")
        return _join(loc)

    if raw.get("scenario", "offline") == "offline" and prov.get("serving") == "serving" and \
            prov.get("scenario", "").startswith(("sweep", "experiments")):
        raw.pop("serving", None)  # the study-wide serving section only applies to serving points of a scenario sweep
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, ExperimentConfig, where, src)) from None
    explicit = {k: v for k, v in raw.items() if k != "study"}
    if isinstance(explicit.get("measurement"), dict):  # run-level: not part of the experiment's identity
        explicit["measurement"] = {k: v for k, v in explicit["measurement"].items() if k not in RUN_LEVEL_MEASUREMENT}
        if not explicit["measurement"]:
            del explicit["measurement"]
    return Experiment(test_id=make_test_id(config, swept, explicit), config=config, explicit=explicit, swept=swept)


def _join(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "<top level>"


_UNSAFE = re.compile(r"[^A-Za-z0-9_.]+")


def _token(text: Any) -> str:
    if isinstance(text, bool):
        text = str(text).lower()
    return _UNSAFE.sub("_", str(text)).strip("_") or "x"


def model_short_name(model: str) -> str:
    name = model.split(":", 1)[1] if model.startswith("synthetic:") else model.rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-") or "model"


def make_test_id(config: ExperimentConfig, swept: dict[str, Any], explicit: dict[str, Any]) -> str:
    """`<backend>-<model>-<dtype>-<axis>_<value>...-<hash>`: no '=', ',' or spaces, so `-k` can type it."""
    parts = [config.backend, model_short_name(config.model), DTYPE_SHORT[config.dtype]]
    if config.scenario != "offline":  # offline ids stay as they were
        parts.append(config.scenario)
    for key, value in swept.items():
        if key in TOP_LEVEL_AXES:
            continue
        leaf = key.split(".")[-1]
        shown = value if not isinstance(value, (dict, list)) else config_hash({"v": value})
        parts.append(f"{_token(leaf)}_{_token(shown)}")
    parts.append(config_hash(explicit))
    return "-".join(parts)


def _check_unique(src: str, experiments: list[Experiment]) -> None:
    seen: dict[str, int] = {}
    for i, exp in enumerate(experiments):
        if exp.test_id in seen:
            raise ConfigError(f"{src}: experiments {seen[exp.test_id]} and {i} are identical ({exp.test_id}); "
                              "remove the duplicate sweep value or explicit experiment")
        seen[exp.test_id] = i
