"""The GPU measurement path of run_experiment, driven end to end without a GPU (review 8.1).

NVML cannot run here, so a small stand-in `pynvml` module simulates one GPU from a known power
trace: 100 W idle, 300 W while a pass runs (a 20 ms square ripple of +-100 W on top, so the
instantaneous field peaks at 400 W while the ~1 s trailing average stays near 300 W). It exposes
what the real driver does: a monotonic total-energy counter that moves in COUNTER_STEP_S steps,
`nvmlDeviceGetPowerUsage` as a 1 s trailing average and the instantaneous field. Everything else is
the real code: Probe, NvmlSampler, NvmlCounterMeter / SampledMeter, the offline scenario, the metrics.
A fake backend "runs" passes by marking the GPU busy for a fixed time. The expected numbers below
come from the trace's own integral, not from the code under test.
"""

from __future__ import annotations

import threading
import time
import types

import pytest

from llem_bench.backends.base import PassOutput
from llem_bench.config.study import parse_study

IDLE_W, BUSY_W, RIPPLE_W, RIPPLE_PERIOD_S = 100.0, 300.0, 100.0, 0.02
COUNTER_STEP_S = 0.01
PASS_S, PREFILL_S = 0.1, 0.02
REQUESTS, OUTPUT_TOKENS = 4, 8


class FakeGpu:
    """Power P(t) = IDLE_W, or BUSY_W +- RIPPLE_W while busy; E(t) its exact integral."""

    def __init__(self):
        self.origin = time.perf_counter()
        self.busy: list[tuple[float, float]] = []  # closed intervals of GPU work (perf_counter times)
        self.lock = threading.Lock()

    def work(self, seconds: float) -> None:
        start = time.perf_counter()
        with self.lock:
            self.busy.append((start, float("inf")))
        time.sleep(seconds)
        with self.lock:
            self.busy[-1] = (start, time.perf_counter())

    def _ripple_integral(self, t: float) -> float:  # integral of the square ripple from origin to t
        phase = (t - self.origin) % RIPPLE_PERIOD_S
        half = RIPPLE_PERIOD_S / 2
        return RIPPLE_W * (phase if phase < half else RIPPLE_PERIOD_S - phase)

    def power(self, t: float) -> float:
        with self.lock:
            busy = any(a <= t <= b for a, b in self.busy)
        if not busy:
            return IDLE_W
        high = ((t - self.origin) % RIPPLE_PERIOD_S) < RIPPLE_PERIOD_S / 2
        return BUSY_W + (RIPPLE_W if high else -RIPPLE_W)

    def extra_j(self, spans: list[tuple[float, float]]) -> float:
        """Energy above idle of these busy spans, ripple included: exact, from the trace."""
        return sum((BUSY_W - IDLE_W) * (b - a) + self._ripple_integral(b) - self._ripple_integral(a) for a, b in spans)

    def energy(self, t: float) -> float:
        """Joules since origin."""
        total = IDLE_W * (t - self.origin)
        with self.lock:
            spans = [(a, min(b, t)) for a, b in self.busy if a < t]
        for a, b in spans:
            total += (BUSY_W - IDLE_W) * (b - a) + self._ripple_integral(b) - self._ripple_integral(a)
        return total


def fake_pynvml(gpu: FakeGpu, counter: bool = True) -> types.ModuleType:
    nv = types.ModuleType("pynvml")

    class NVMLError(Exception):
        def __init__(self, value=None):
            super().__init__(value)

    nv.NVMLError = NVMLError
    nv.NVMLError_FunctionNotFound = type("NVMLError_FunctionNotFound", (NVMLError,), {})
    nv.NVMLError_NotSupported = type("NVMLError_NotSupported", (NVMLError,), {})
    nv.NVML_SUCCESS, nv.NVML_FI_DEV_POWER_INSTANT = 0, 186
    nv.NVML_CLOCK_SM, nv.NVML_CLOCK_MEM, nv.NVML_TEMPERATURE_GPU = 0, 2, 0
    now = time.perf_counter

    def total_energy(handle):
        if not counter:
            raise nv.NVMLError_NotSupported("no counter")
        t = now()
        updated = gpu.origin + ((t - gpu.origin) // COUNTER_STEP_S) * COUNTER_STEP_S  # moves in steps
        return int(gpu.energy(updated) * 1000)  # mJ

    def field_values(handle, ids):
        value = types.SimpleNamespace(nvmlReturn=0, value=types.SimpleNamespace(uiVal=int(gpu.power(now()) * 1000)))
        return [value]

    def trailing_average_mw(handle):
        t = now()
        return int((gpu.energy(t) - gpu.energy(t - 1.0)) * 1000)  # a 1 s trailing average, like Hopper

    nv.nvmlInit = lambda: None
    nv.nvmlDeviceGetCount = lambda: 1
    nv.nvmlDeviceGetHandleByIndex = lambda i: "gpu0"
    nv.nvmlDeviceGetUUID = lambda h: "GPU-fake0"
    nv.nvmlDeviceGetName = lambda h: "NVIDIA H100 80GB HBM3"
    nv.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    nv.nvmlDeviceGetMaxClockInfo = lambda h, clock: 1980
    nv.nvmlDeviceGetTotalEnergyConsumption = total_energy
    nv.nvmlDeviceGetPowerUsage = trailing_average_mw
    nv.nvmlDeviceGetFieldValues = field_values
    nv.nvmlDeviceGetClockInfo = lambda h, clock: 1980
    nv.nvmlDeviceGetTemperature = lambda h, sensor: 50
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=100, memory=40)
    nv.nvmlDeviceGetCurrentClocksEventReasons = lambda h: 0
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: []
    return nv


class FakeBackend:
    """Fixed pass times and token counts on the fake GPU."""

    name = "fake"
    streaming_method = ""

    def __init__(self, gpu: FakeGpu, tokenizer):
        self.gpu, self.tokenizer = gpu, tokenizer

    def run_pass(self, workload):
        self.gpu.work(PASS_S)
        return PassOutput(output_tokens=[workload.output_tokens] * workload.num_requests)

    def run_prefill_pass(self, workload):
        self.gpu.work(PREFILL_S)
        return PassOutput(output_tokens=[1] * workload.num_requests)

    def synchronize(self):
        pass

    def cuda_ordinals(self):
        return [0]

    def reset_peak_memory(self):
        pass

    def peak_memory_mb(self):
        return 1000.0, "fake"

    def effective_config(self):
        return {}


@pytest.fixture
def fake_gpu(monkeypatch, tiny_checkpoint):
    import sys

    from transformers import AutoTokenizer

    from llem_bench.energy import gpus, idle
    from llem_bench.harness import runner

    gpu = FakeGpu()
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(gpu))
    monkeypatch.setattr(gpus, "nvml_handles_for", lambda ordinals: {"fake0": "gpu0"})
    monkeypatch.setattr(runner, "environment", lambda: {})  # host facts are cached per process: keep the fake out
    # Shorter settle constants than on a real GPU, so the test takes seconds; the rule is the same.
    monkeypatch.setattr(idle, "MIN_QUIET_S", 1.0)
    monkeypatch.setattr(idle, "PLATEAU_STEP_S", 0.3)
    return gpu, AutoTokenizer.from_pretrained(str(tiny_checkpoint))


def run(gpu, tokenizer, **measurement):
    from llem_bench.energy.idle import note_gpu_work
    from llem_bench.energy.meter import make_energy_meter
    from llem_bench.harness.runner import run_experiment

    experiment = parse_study({
        "study": "fake", "model": "synthetic:tiny", "backend": "pytorch",
        "workload": {"num_prompts": REQUESTS, "max_input_tokens": 16, "output_tokens": OUTPUT_TOKENS},
        "measurement": {"cycles": 3, "min_window_s": 0.5, "baseline_idle_s": 1.0, "sampler_interval_s": 0.05,
                        "latency": False, "warmup": {"min_runs": 4, "max_runs": 4, "cv_target": 0.5},
                        **measurement},
    })[1][0]
    gpu.work(0.5)  # the previous experiment's work: the ~1 s average still carries it for a second
    note_gpu_work()
    return run_experiment(experiment, FakeBackend(gpu, tokenizer),
                          lambda ordinals, sampler: make_energy_meter("auto", ordinals, sampler),
                          run_id="r", started_at="now", model_reused=True, load_s=0.0)


def test_net_energy_idle_peak_phases_and_cross_check_against_the_trace(fake_gpu):
    gpu, tokenizer = fake_gpu
    result = run(gpu, tokenizer)
    assert result.status == "ok", result.error
    assert result.energy["source"] == "nvml_counter"

    # Idle: from the counter, after the quiet wait, so it is the trace's 100 W (not the decaying average).
    idle = result.idle["resident"]
    # (within 2 counter steps of 1 J at 100 W over the 1 s window, plus a little)
    assert idle["mean_power_w"] == pytest.approx(IDLE_W, abs=2.5)
    assert abs(idle["mean_power_w"] - IDLE_W) <= idle["uncertainty_w"]
    assert "counter" in idle["method"] and idle["plateau"] is True
    assert idle["seconds_after_last_gpu_work"] >= 1.0

    tokens = REQUESTS * OUTPUT_TOKENS
    spans = gpu.busy[1 + 4:]  # after the previous experiment's work and the 4 warmup passes: the cycles' passes
    for cycle in result.cycles:
        assert cycle["output_tokens"] == tokens * cycle["passes"]
        mine, spans = spans[:cycle["passes"]], spans[cycle["passes"]:]
        busy = sum(b - a for a, b in mine)  # the passes as the GPU ran them (sleeps overshoot on a loaded box)
        assert busy >= cycle["passes"] * PASS_S - 1e-3
        extra = gpu.extra_j(mine)  # ~ (300 - 100) W x busy time
        # Gross: the counter over the window is the trace's energy over it, to within one counter step
        # (at up to 400 W) at each edge.
        slack = 2 * (BUSY_W + RIPPLE_W) * COUNTER_STEP_S
        assert cycle["energy_j"] == pytest.approx(IDLE_W * cycle["wall_time_s"] + extra, abs=slack)
        # Net: what the passes added over idle (0.625 J/token at 0.1 s passes of 32 tokens).
        assert cycle["energy_per_output_token_net_j"] == pytest.approx(
            (cycle["energy_j"] - idle["mean_power_w"] * cycle["wall_time_s"]) / cycle["output_tokens"])
        assert cycle["energy_per_output_token_net_j"] == pytest.approx(
            extra / cycle["output_tokens"], abs=(slack + 2.5 * cycle["wall_time_s"]) / cycle["output_tokens"])
        # Peak: the instantaneous field sees the 400 W ripple top; the 1 s average stays near 300 W.
        assert cycle["peak_power_w"] == pytest.approx(BUSY_W + RIPPLE_W, abs=1.0)
        assert cycle["peak_power_1s_avg_w"] < BUSY_W + 0.3 * RIPPLE_W
    assert "power_instant_w" in result.power["peak_power_field"]
    assert result.metrics["peak_power_w"].mean == pytest.approx(BUSY_W + RIPPLE_W, abs=1.0)

    # The net CI is at least as wide as the idle term alone (it cannot shrink with more cycles).
    net = result.metrics["energy_per_output_token_net_j"]
    half = (net.ci95_high - net.ci95_low) / 2
    assert half >= result.idle["net_idle_term_j"] > 0
    assert result.idle["net_share_of_gross"] == pytest.approx(
        net.mean / result.metrics["energy_per_output_token_j"].mean)

    # Cross-check: the ~1 s trailing average integrated over the windows against the counter. The first
    # window starts 0.4 s after idle ended, so the average still lags the rise: it reads low.
    check = result.power["cross_check"]
    sampled = sum(c["sampled_energy_j"] for c in result.cycles)
    counter = sum(c["energy_j"] for c in result.cycles)
    assert check["relative_difference"] == pytest.approx((sampled - counter) / counter)
    assert check["relative_difference"] < 0
    assert result.cycles[0]["cross_check"]["relative_difference"] < result.cycles[-1]["cross_check"]["relative_difference"]

    # Phases: prefill-only passes of 20 ms (as the fake GPU ran them); decode = full - prefill per pass,
    # with the observed token counts.
    phases = result.phases
    assert len(spans) >= 1  # what is left after the cycles: the prefill-only passes
    pre_busy = sum(b - a for a, b in spans) / len(spans)
    assert pre_busy >= PREFILL_S - 1e-3
    assert pre_busy - 1e-3 <= phases["prefill"]["time_s"] <= pre_busy + 0.05  # + the loop between passes
    assert phases["decode"]["tokens"] == tokens - REQUESTS
    per_pass = sum(c["wall_time_s"] for c in result.cycles) / sum(c["passes"] for c in result.cycles)
    assert phases["decode"]["time_s"] == pytest.approx(per_pass - phases["prefill"]["time_s"])
    # Prefill energy per pass: 300 W while busy, 100 W in the gaps between passes (+ counter steps at the edges).
    pre_s = phases["prefill"]["time_s"]
    assert phases["prefill"]["energy_j"] == pytest.approx(IDLE_W * pre_s + gpu.extra_j(spans) / len(spans),
                                                          abs=2 * (BUSY_W + RIPPLE_W) * COUNTER_STEP_S / len(spans))
    assert phases["decode"]["energy_per_token_j"] == pytest.approx(
        phases["decode"]["energy_j"] / (tokens - REQUESTS))
    assert result.validity["verdict"] != "invalid", result.validity


def test_without_a_counter_energy_comes_from_samples_and_the_cross_check_says_same_source(fake_gpu, monkeypatch):
    import sys

    gpu, tokenizer = fake_gpu
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(gpu, counter=False))
    result = run(gpu, tokenizer, phases=False, cycles=2)
    assert result.energy["source"] == "nvml_power_samples"
    assert result.power["cross_check"]["agree"] is None
    assert "same source" in result.power["cross_check"]["reason"]
    assert "averaged power field" in result.idle["resident"]["method"]
    assert result.idle["resident"]["mean_power_w"] == pytest.approx(IDLE_W, abs=3.0)
