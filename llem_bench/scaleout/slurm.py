"""`llem-bench submit STUDY --slurm`: the study's shards as one Slurm job array, through `sbatch`.

sbatch directly rather than submitit: no extra dependency, the job is a plain shell script a person
can read, rerun and edit (`<out>/<study>/<run-id>-slurm/job.sh`), it works with any Slurm version
and site policy (extra flags pass through), and each task runs the same pytest command as a local
run, so nothing needs pickling across Python versions or into containers.

Task i of the array (1..N) runs `pytest BENCHMARKS --study STUDY --llem-shard i/N` into
`<out>/<study>/<run-id>-shard<i>of<N>`; `llem-bench merge` (or `submit --wait`) joins them into
`<out>/<study>/<run-id>`.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from llem_bench.config.errors import ConfigError
from llem_bench.config.study import ClusterSpec


@dataclass(frozen=True)
class SubmitPlan:
    study_path: Path  # absolute
    study: str
    run_id: str
    out_root: Path  # absolute
    shards: int
    cluster: ClusterSpec
    workdir: Path  # where pytest runs (the checkout with benchmarks/)

    @property
    def job_dir(self) -> Path:
        return self.out_root / self.study / f"{self.run_id}-slurm"

    def shard_dir(self, index: int) -> Path:
        return self.out_root / self.study / shard_run_id(self.run_id, index, self.shards)

    @property
    def merged_dir(self) -> Path:
        return self.out_root / self.study / self.run_id


def shard_run_id(run_id: str, index: int, count: int) -> str:
    return f"{run_id}-shard{index}of{count}"


def sbatch_script(plan: SubmitPlan) -> str:
    c = plan.cluster
    lines = ["#!/bin/bash", f"#SBATCH --job-name=llem-{plan.study}", f"#SBATCH --array=1-{plan.shards}",
             "#SBATCH --ntasks=1", f"#SBATCH --chdir={plan.workdir}",
             f"#SBATCH --output={plan.job_dir}/shard-%a.out"]
    if c.partition:
        lines.append(f"#SBATCH --partition={c.partition}")
    if c.time:
        lines.append(f"#SBATCH --time={c.time}")
    if c.gpus_per_task:
        lines.append(f"#SBATCH --gpus-per-task={c.gpus_per_task}")
    if c.cpus_per_task:
        lines.append(f"#SBATCH --cpus-per-task={c.cpus_per_task}")
    if c.mem:
        lines.append(f"#SBATCH --mem={c.mem}")
    lines += [f"#SBATCH {arg}" for arg in c.sbatch_args]
    python = c.python or sys.executable
    command = [*(shlex.split(c.launcher) if c.launcher else []), python, "-m", "pytest", c.benchmarks,
               "--study", str(plan.study_path), "--llem-out", str(plan.out_root),
               "-p", "no:cacheprovider"]
    if c.gpus_per_worker:
        command += ["-n", str(c.gpus_per_task // c.gpus_per_worker), "--llem-gpus-per-worker", str(c.gpus_per_worker)]
    command += list(c.pytest_args)
    shard = f"${{SLURM_ARRAY_TASK_ID}}/{plan.shards}"
    run_id = f"{plan.run_id}-shard${{SLURM_ARRAY_TASK_ID}}of{plan.shards}"
    lines += [
        "set -euo pipefail",
        "# One shard of the study per array task; pytest exits 1 when an experiment failed.",
        f"echo \"llem-bench: shard {shard} on $(hostname -s), CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES-}}\"",
        " ".join(shlex.quote(part) for part in command) + f" --llem-shard \"{shard}\" --llem-run-id \"{run_id}\"",
    ]
    return "\n".join(lines) + "\n"


def write_job(plan: SubmitPlan) -> Path:
    plan.job_dir.mkdir(parents=True, exist_ok=True)
    path = plan.job_dir / "job.sh"
    path.write_text(sbatch_script(plan))
    return path


def submit(plan: SubmitPlan, wait: bool) -> tuple[Optional[str], int, Path]:
    """sbatch the job array: (job id, sbatch's exit status, the script). With `wait`, sbatch returns when
    every task ended; its status is then non-zero when one of them failed."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise ConfigError("submit --slurm: sbatch not found on PATH; run this on a Slurm login node")
    for index in range(1, plan.shards + 1):
        if plan.shard_dir(index).exists():
            raise ConfigError(f"submit: {plan.shard_dir(index)} exists already; choose another --run-id")
    if plan.merged_dir.exists():
        raise ConfigError(f"submit: {plan.merged_dir} exists already; choose another --run-id")
    script = write_job(plan)
    args = [sbatch, "--parsable", *(["--wait"] if wait else []), str(script)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    job_line = proc.stdout.readline().strip()  # --parsable: "<job id>[;cluster]" at submission
    job_id = job_line.split(";")[0] or None
    if job_id:
        print(f"llem-bench: submitted job array {job_id} ({plan.shards} shard(s)); logs in {plan.job_dir}",
              flush=True)
    rest = proc.stdout.read()
    code = proc.wait()
    if rest.strip():
        print(rest.strip())
    return job_id, code, script
