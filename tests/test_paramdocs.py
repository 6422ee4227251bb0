"""The generated parameter reference in docs/parameters/ must match the schema, and the coverage audit works."""

import json

from llem_bench.config import paramdocs
from llem_bench.config.coverage import ENERGY_RELEVANT, coverage, render_coverage
from llem_bench.config.introspect import backend_fields


def test_committed_parameter_docs_are_not_stale():
    problems = paramdocs.stale()
    assert not problems, "docs/parameters is stale; regenerate with `python -m llem_bench.config.paramdocs`:\n" + \
        "\n".join(problems)


def test_check_flag_exits_1_on_stale_docs_and_0_after_writing(tmp_path):
    assert paramdocs.main(["--check", "--docs", str(tmp_path)]) == 1
    outcomes = {f"{backend}:{name}": {"outcome": "passed", "reason": None, "where": "CPU"}
                for backend, names in paramdocs.expected_fields().items() for name in names}
    (tmp_path / "w.json").write_text(json.dumps(outcomes))
    assert paramdocs.main(["--docs", str(tmp_path), "--wiring", str(tmp_path / "w.json")]) == 0
    assert paramdocs.main(["--check", "--docs", str(tmp_path)]) == 0
    page = tmp_path / "pytorch.md"
    page.write_text(page.read_text().replace("batch_size", "batch_sz"))
    assert paramdocs.main(["--check", "--docs", str(tmp_path)]) == 1


def test_wiring_page_shows_skips_with_reasons_and_missing_checks():
    text = paramdocs.render_wiring({
        "pytorch:pytorch.device": {"outcome": "skipped", "reason": "Skipped: needs a GPU", "where": "CPU"},
        "pytorch:dtype": {"outcome": "failed", "reason": "AssertionError: x", "where": "CPU"},
    })
    assert "| field | CPU |" in text
    assert "| `pytorch.device` | skipped: needs a GPU |" in text
    assert "| `dtype` | FAIL: AssertionError: x |" in text
    assert "| `pytorch.batch_size` | no recorded check |" in text
    assert "CPU: 0 passed, 1 skipped, 1 failed." in text


def test_a_gpu_run_gets_its_own_column_beside_the_cpu_one(tmp_path):
    cpu = {"vllm:vllm.quantization": {"outcome": "skipped", "reason": "fp8 weight kernels need a GPU",
                                      "where": "CPU, vllm 0.32.0"}}
    gpu = {"vllm:vllm.quantization": {"outcome": "passed", "reason": None, "where": "NVIDIA H200, vllm 0.26.0"}}
    text = paramdocs.render_wiring(cpu, gpu)
    assert "| field | CPU, vllm 0.32.0 | NVIDIA H200, vllm 0.26.0 |" in text
    assert "| `vllm.quantization` | skipped: fp8 weight kernels need a GPU | pass |" in text
    # --wiring-gpu keeps the GPU outcomes in their own file, which --check then expects in wiring.md
    (tmp_path / "cpu.json").write_text(json.dumps(cpu))
    (tmp_path / "gpu.json").write_text(json.dumps(gpu))
    assert paramdocs.main(["--docs", str(tmp_path), "--wiring", str(tmp_path / "cpu.json"),
                           "--wiring-gpu", str(tmp_path / "gpu.json")]) == 0
    assert json.loads((tmp_path / paramdocs.WIRING_GPU_JSON).read_text()) == gpu
    assert "| `vllm.quantization` | skipped: fp8 weight kernels need a GPU | pass |" in (tmp_path / "wiring.md").read_text()


def test_pages_document_every_field_with_its_upstream():
    docs = paramdocs.documents()
    for backend in ("pytorch", "vllm"):
        page = next(text for path, text in docs.items() if path.name == f"{backend}.md")
        for f in backend_fields(backend):
            assert f"`{f.name}`" in page, f.key
            assert f.description, f.key
            assert f.upstream or f.name == "passthrough", f"{f.key} names no upstream API"


def test_coverage_classifies_every_upstream_parameter():
    for backend in ("pytorch", "vllm"):
        cov = coverage(backend)
        assert cov.upstream and cov.relevant and cov.percent is not None
        assert set(cov.modelled) | set(cov.pinned) | set(cov.unmodelled) == set(cov.upstream)
        assert set(cov.relevant) <= set(ENERGY_RELEVANT[backend])
        text = render_coverage(backend)
        assert "energy-relevant coverage" in text and "not modelled, not energy-relevant" in text
        # the headline counts pinned parameters as controlled, with the split shown
        assert set(cov.covered_relevant) == set(cov.typed_relevant) | set(cov.pinned_relevant)
        assert f"({len(cov.typed_relevant)} typed fields + {len(cov.pinned_relevant)} pinned by the method)" in text
        assert cov.percent >= 90, f"{backend}: energy-relevant coverage fell to {cov.percent:.0f}% (goal: 90%)"
    assert coverage("pytorch").modelled["from_pretrained.attn_implementation"] == "pytorch.attn_implementation"
    assert coverage("vllm").modelled["EngineArgs.max_num_seqs"] == "vllm.max_num_seqs"
    # EngineArgs shortcuts into compilation_config count as the compilation fields of the same name
    assert coverage("vllm").modelled["EngineArgs.max_cudagraph_capture_size"] == \
        "vllm.compilation.max_cudagraph_capture_size"
    assert "GenerationConfig.stop_strings" in coverage("pytorch").pinned_relevant
