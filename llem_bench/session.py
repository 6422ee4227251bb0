"""One pytest session's llem state: the study, where each backend runs, the run folder, its
manifest, GPU hygiene, and running one experiment so that its result is on disk before the
test reports (nothing measured is lost to a later crash or Ctrl-C)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from llem_bench.config.study import Experiment, Study
from llem_bench.energy.meter import make_energy_meter
from llem_bench.harness.pool import BackendPool
from llem_bench.harness.runner import failed_result, log, run_experiment
from llem_bench.hygiene import residual_memory, session_idle_power, settle
from llem_bench.isolation.runner import DockerOptions, RunnerSpec, check_runner, choose_runner, run_in_worker
from llem_bench.results.environment import git_info
from llem_bench.results.manifest import Manifest
from llem_bench.results.schema import ExperimentResult
from llem_bench.results.store import RunDir, new_run_id, utc_now


class ResidualMemoryError(RuntimeError):
    pass


class LlemSession:
    def __init__(self, config: Any, study: Optional[Study], experiments: list[Experiment]):
        self.config = config
        self.option = config.option
        self.study = study
        self.experiments = experiments
        self.pool = BackendPool()
        self.run_dir: Optional[RunDir] = None
        self.manifest: Optional[Manifest] = None
        self.runners: dict[str, RunnerSpec] = {}
        self.comparison = None
        self.already_done: dict[str, str] = {}  # resume: test_id -> reason it is skipped
        self.resume_problems: list[str] = []
        self.idle_reference_w: Optional[float] = None
        if study is None:
            return
        for backend in dict.fromkeys(e.backend for e in experiments):
            spec = choose_runner(backend, self.option.llem_runner, study.runners)
            check_runner(spec, f"runner for {backend}", need_gpus=_host_has_gpus())
            self.runners[backend] = spec
        if self.option.llem_resume:
            self.run_dir = RunDir(Path(self.option.llem_resume))
            self._load_done()
        else:
            workerinput = getattr(config, "workerinput", {})
            run_id = workerinput.get("llem_run_id") or self.option.llem_run_id or \
                new_run_id(git_info(config.rootpath).get("git_commit"))
            self.run_dir = RunDir.create(Path(self.option.llem_out), study.study, run_id)

    @property
    def is_controller(self) -> bool:
        return not hasattr(self.config, "workerinput")

    def _load_done(self) -> None:
        results, problems = self.run_dir.read_results_with_problems()
        self.resume_problems = problems
        for r in results:
            if r.status == "ok":
                self.already_done[r.test_id] = f"already done in {self.run_dir.path} (--llem-resume)"

    def open_manifest(self, test_ids: list[str]) -> None:
        """Controller only: record every selected experiment as pending (or skipped on resume)."""
        self.manifest = Manifest.open(self.run_dir.path, self.study.study, self.run_dir.path.name)
        self.manifest.register(test_ids)
        for test_id in test_ids:
            if test_id in self.already_done:
                self.manifest.update(test_id, "skipped", reason=self.already_done[test_id],
                                     result=f"results/{test_id}.json")
        if self.option.llem_settle_s > 0:
            self.idle_reference_w = session_idle_power()

    def _hygiene(self, experiment: Experiment) -> dict[str, Any]:
        memory = residual_memory(self.option.llem_max_residual_mb)
        if memory.get("ok") is False:
            names = ", ".join(f"{p['name']} (pid {p['pid']}, {p['used_mb']} MiB)" for p in memory["other_processes"])
            message = (f"{memory['other_used_mb']} MiB of GPU memory held by other processes: {names}; "
                       f"above --llem-max-residual-mb {self.option.llem_max_residual_mb:.0f}")
            if self.option.llem_residual == "fail":
                raise ResidualMemoryError(message + " (stop them, or pass --llem-residual warn)")
            log(f"{experiment.test_id}: warning: {message}")
        target = self.idle_reference_w * 1.15 + 10 if self.idle_reference_w is not None else None
        return {"residual_memory": memory, "settle": settle(target, self.option.llem_settle_s)}

    def run(self, experiment: Experiment) -> ExperimentResult:
        assert self.run_dir is not None
        started = utc_now()
        run_id = self.run_dir.path.name
        runner = self.runners[experiment.backend]
        self._mark(experiment.test_id, "running", runner=str(runner))
        log(f"{experiment.test_id}: starting ({runner})")
        try:
            hygiene = self._hygiene(experiment)
            self._mark(experiment.test_id, "running", hygiene=hygiene)
            result = self._measure(experiment, runner, run_id, started)
            result.timings["hygiene"] = hygiene
        except BaseException as exc:
            self.pool.close()  # a failure may leave the backend in a bad state: reload next time
            if isinstance(exc, Exception):
                reason = f"{type(exc).__name__}: {exc}"
                self.run_dir.write_result(failed_result(experiment, run_id, started, reason))
                self._mark(experiment.test_id, "failed", reason=reason.splitlines()[0][:500],
                           result=f"results/{experiment.test_id}.json")
            raise
        path = self.run_dir.write_result(result)
        log(f"{experiment.test_id}: result written to {path}")
        if result.status != "ok":
            self._mark(experiment.test_id, "failed", reason=(result.error or "")[:500], result=f"results/{path.name}")
            raise RuntimeError(f"experiment failed in its worker: {result.error}")
        self._mark(experiment.test_id, "done", result=f"results/{path.name}",
                   verdict=result.validity.get("verdict"))
        return result

    def _measure(self, experiment: Experiment, runner: RunnerSpec, run_id: str, started: str) -> ExperimentResult:
        if runner.kind == "inprocess":
            backend, reused, load_s = self.pool.acquire(experiment.config)
            return run_experiment(
                experiment, backend,
                lambda ordinals, sampler=None: make_energy_meter(experiment.config.measurement.energy, ordinals, sampler),
                run_id=run_id, started_at=started, model_reused=reused, load_s=load_s,
                idle_before_load=self.pool.idle_before_load, timeseries_dir=self.run_dir.path / "timeseries",
            )
        return run_in_worker(runner, experiment, run_id=run_id, started_at=started,
                             log_path=self.run_dir.path / "logs" / f"{experiment.test_id}.log",
                             timeout_s=self.option.llem_timeout,
                             docker=DockerOptions(self.option.llem_docker_shm, self.option.llem_docker_ipc_host))

    def _mark(self, test_id: str, state: str, **fields: Any) -> None:
        if self.manifest is not None:
            self.manifest.update(test_id, state, **fields)

    def close(self, interrupted: bool) -> None:
        self.pool.close()
        if self.manifest is not None:
            self.manifest.finish(interrupted)


def _host_has_gpus() -> bool:
    try:
        from llem_bench.energy.gpus import nvml_init

        return nvml_init().nvmlDeviceGetCount() > 0
    except Exception:
        return False
