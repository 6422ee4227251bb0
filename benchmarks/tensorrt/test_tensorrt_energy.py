"""One test per TensorRT-LLM experiment of the study given with --study. Where tensorrt_llm does not import
and the study runs it here (no docker: or venv: runner), each skips and says how to run it."""

import pytest

from llem_bench.backends.tensorrt import unavailable_reason
from llem_bench.testing import assert_sound

pytestmark = pytest.mark.llem_backend("tensorrt")


def test_tensorrt(llem_experiment, llem_run, llem_session):
    reason = unavailable_reason(llem_session.runners["tensorrt"].kind)
    if reason:
        pytest.skip(reason)
    assert_sound(llem_run(llem_experiment))
