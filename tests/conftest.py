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
