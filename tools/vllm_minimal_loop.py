"""A minimal vLLM throughput/energy loop, independent of llem-bench's harness: the yardstick the
suite's own vLLM numbers are checked against (tools/vllm_overhead.py runs both interleaved).

The window rule is the suite's: repeat the whole batch until the window lasts min_window_s; tok/s =
generated tokens / window time; energy = NVML energy-counter delta over the window. Nothing else runs
in the process: no sampler thread, no stats logging beyond vLLM's own default.

Standalone:
    python tools/vllm_minimal_loop.py --model PATH --batch 256 --input-tokens 64 --output-tokens 256 \
        --engine-args '{"dtype": "bfloat16", "gpu_memory_utilization": 0.8}'
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any, Optional


def nvml_counter() -> Optional[Any]:
    """A function returning the summed energy counter (J) of the GPUs in CUDA_VISIBLE_DEVICES order,
    or None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            return None
        handles = [pynvml.nvmlDeviceGetHandleByIndex(0)]  # the loop runs on the first visible GPU
        return lambda: sum(pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in handles) / 1000.0
    except Exception:
        return None


def sampling_params(output_tokens: int) -> Any:
    from vllm import SamplingParams

    return SamplingParams(max_tokens=output_tokens, min_tokens=output_tokens, ignore_eos=True, temperature=0.0,
                          detokenize=False)


def one_pass(llm: Any, prompts: list[dict], sampling: Any) -> int:
    llm.reset_prefix_cache()  # the same prompts every pass: measure compute, not cache hits
    outputs = llm.generate(prompts, sampling, use_tqdm=False)
    return sum(len(o.outputs[0].token_ids) for o in outputs)


def measure(llm: Any, token_ids: list[list[int]], output_tokens: int, *, min_window_s: float, windows: int,
            warmup_passes: int, counter: Optional[Any] = None) -> dict[str, Any]:
    """Warm up, then `windows` windows of whole passes, each lasting at least min_window_s."""
    prompts = [{"prompt_token_ids": ids} for ids in token_ids]
    sampling = sampling_params(output_tokens)
    for _ in range(warmup_passes):
        one_pass(llm, prompts, sampling)
    rows = []
    for _ in range(windows):
        tokens = passes = 0
        joules0 = counter() if counter else None
        start = time.perf_counter()
        while True:
            tokens += one_pass(llm, prompts, sampling)
            passes += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_window_s:
                break
        joules = counter() - joules0 if counter else None
        rows.append({"passes": passes, "wall_time_s": elapsed, "output_tokens": tokens,
                     "output_tokens_per_s": tokens / elapsed, "energy_j": joules,
                     "energy_per_output_token_j": joules / tokens if joules is not None else None})
    tps = [r["output_tokens_per_s"] for r in rows]
    return {"windows": rows, "output_tokens_per_s": statistics.mean(tps),
            "energy_per_output_token_j": statistics.mean(r["energy_per_output_token_j"] for r in rows)
            if counter else None}


def random_token_ids(batch: int, length: int, vocab_size: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(100, vocab_size - 100) for _ in range(length)] for _ in range(batch)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint path or HF id")
    parser.add_argument("--engine-args", default="{}", help="JSON of extra vllm.LLM keyword arguments")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--input-tokens", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=256)
    parser.add_argument("--min-window-s", type=float, default=6.0)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--warmup-passes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from vllm import LLM

    llm = LLM(model=args.model, **json.loads(args.engine_args))
    vocab = llm.get_tokenizer().vocab_size
    ids = random_token_ids(args.batch, args.input_tokens, vocab, args.seed)
    result = measure(llm, ids, args.output_tokens, min_window_s=args.min_window_s, windows=args.windows,
                     warmup_passes=args.warmup_passes, counter=nvml_counter())
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
