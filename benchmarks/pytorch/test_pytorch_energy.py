"""One test per PyTorch experiment of the study given with --study."""

import pytest

from llem_bench.testing import assert_sound

pytestmark = pytest.mark.llem_backend("pytorch")


def test_pytorch(llem_experiment, llem_run):
    assert_sound(llem_run(llem_experiment))
