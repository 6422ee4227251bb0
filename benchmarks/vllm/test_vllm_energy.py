"""One test per vLLM experiment of the study given with --study."""

import pytest

from llem_bench.testing import assert_sound

pytestmark = pytest.mark.llem_backend("vllm")


def test_vllm(llem_experiment, llem_run):
    assert_sound(llem_run(llem_experiment))
