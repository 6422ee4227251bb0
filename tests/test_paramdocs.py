from llem_bench.config.coverage import coverage
from llem_bench.config.introspect import backend_fields, render_params
from llem_bench.config.paramdocs import documents


def test_committed_parameter_docs_match_the_schema():
    stale = [str(p) for p, text in documents().items() if not p.is_file() or p.read_text() != text]
    assert not stale, f"regenerate with `python -m llem_bench.config.paramdocs`: {stale}"


def test_every_field_has_a_description_and_backend_fields_an_upstream():
    for backend in ("pytorch", "vllm"):
        for f in backend_fields(backend):
            assert f.description, f.key
            assert f.upstream or f.name in ("passthrough",), f.key


def test_params_listing_and_coverage_goal():
    text = render_params("vllm")
    assert "vllm.max_num_seqs" in text and "EngineArgs.max_num_seqs" in text
    for backend in ("pytorch", "vllm"):
        assert coverage(backend)["coverage"] >= 0.9, coverage(backend)["missing_energy_relevant"]
