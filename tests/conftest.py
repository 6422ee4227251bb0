import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# One synthetic-checkpoint cache for the whole test run (and for pytester subprocesses,
# which inherit the environment), so the tiny model is built once.
os.environ.setdefault("LLEM_CACHE_DIR", str(REPO / ".llem-cache"))


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    from llem_bench.workload.synthetic import ensure_checkpoint

    return ensure_checkpoint("synthetic:tiny", device="cpu")


@pytest.fixture
def write_study(tmp_path):
    """Write a study YAML from text and return its path."""

    def write(text: str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """The README's main job, run once per test session: (completed process, run folder)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("quickstart")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "--study", "studies/quickstart.yaml",
         "--llem-out", str(out), "--llem-run-id", "qs", "-q", "-p", "no:cacheprovider",
         # On a shared machine the sub-second CPU windows can vary past the 25% "invalid" line; these tests
         # read the run's files. The CI's own quickstart step runs without this flag.
         "--llem-allow-invalid"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, f"the quickstart study failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, out / "quickstart" / "qs"
