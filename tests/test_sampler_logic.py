"""The sampler's arithmetic on constructed samples (no GPU), plus its thread driven by stand-in NVML
query functions so stop/mark/failure handling is exercised here too."""

import csv
import math
import threading

import pytest

from llem_bench.energy.sampler import (THROTTLING, NvmlSampler, Samples, cross_check, decode_throttle_reasons,
                                       integrate_energy_j, summarize_window, to_csv)


def rows_for(gpu, times, powers, tick0=0, **fields):
    return [{"t": t, "tick": tick0 + i, "gpu": gpu, "power_w": p, "power_instant_w": p, "sm_clock_mhz": fields.get("sm", 1980),
             "mem_clock_mhz": 2619, "temperature_c": fields.get("temp", 50), "gpu_util_pct": 100, "mem_util_pct": 40,
             "throttle_mask": fields.get("mask", 0), "energy_mj": fields.get("energy", [None] * len(times))[i]}
            for i, (t, p) in enumerate(zip(times, powers))]


# -- integration -------------------------------------------------------------------------------------

def test_constant_power_gives_power_times_duration_exactly():
    times = [i * 0.05 for i in range(201)]  # 0 .. 10 s
    assert integrate_energy_j(times, [300.0] * len(times), 1.0, 9.0) == pytest.approx(300.0 * 8.0, rel=1e-12)
    # Edges that fall between samples are interpolated, still exact for constant power.
    assert integrate_energy_j(times, [300.0] * len(times), 1.013, 8.987) == pytest.approx(300.0 * 7.974, rel=1e-12)


def test_linear_ramp_is_integrated_exactly():
    # P(t) = 100 + 20 t; integral over [t0, t1] = 100 (t1 - t0) + 10 (t1^2 - t0^2); trapezoid is exact on lines.
    times = [0.0, 0.3, 0.35, 1.0, 2.2, 3.0, 4.0]  # uneven ticks on purpose
    powers = [100 + 20 * t for t in times]
    t0, t1 = 0.1, 3.7
    expected = 100 * (t1 - t0) + 10 * (t1 ** 2 - t0 ** 2)
    assert integrate_energy_j(times, powers, t0, t1) == pytest.approx(expected, rel=1e-12)


def test_edges_are_interpolated_not_snapped_to_samples():
    # A step between samples: the window [0.5, 1.5] sees half of each trapezoid.
    times, powers = [0.0, 1.0, 2.0], [0.0, 100.0, 100.0]
    # [0.5, 1.0]: power 50 -> 100, area 37.5; [1.0, 1.5]: 100 flat, area 50.
    assert integrate_energy_j(times, powers, 0.5, 1.5) == pytest.approx(87.5)
    assert integrate_energy_j(times, powers, 0.25, 0.25) == 0.0


def test_uncovered_window_is_none_not_extrapolated_and_none_powers_are_skipped():
    times, powers = [1.0, 2.0, 3.0], [100.0, None, 100.0]
    assert integrate_energy_j(times, powers, 1.0, 3.0) == pytest.approx(200.0)
    assert integrate_energy_j(times, powers, 0.5, 3.0) is None
    assert integrate_energy_j(times, powers, 1.0, 3.5) is None
    assert integrate_energy_j([1.0], [100.0], 1.0, 1.0) is None
    with pytest.raises(ValueError):
        integrate_energy_j(times, powers, 3.0, 1.0)


# -- throttle reasons ----------------------------------------------------------------------------------

def test_throttle_reasons_decoded_and_classified():
    assert decode_throttle_reasons(0) == [] and decode_throttle_reasons(None) == []
    assert decode_throttle_reasons(0x1) == ["gpu_idle"]
    assert decode_throttle_reasons(0x4 | 0x40 | 0x100) == ["sw_power_cap", "hw_thermal_slowdown", "display_clock_setting"]
    assert decode_throttle_reasons(0x1FF, throttling_only=True) == [
        "sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"]
    assert set(decode_throttle_reasons(0x1FF, throttling_only=True)) == THROTTLING
    assert decode_throttle_reasons(0x1 | 0x2 | 0x10 | 0x100, throttling_only=True) == []
    assert decode_throttle_reasons(0x400) == ["unknown_0x400"]  # new driver bits are not dropped


# -- cross-check ---------------------------------------------------------------------------------------

def test_cross_check_threshold_is_three_percent():
    assert cross_check(1000.0, 1029.0)["agree"] is True
    assert cross_check(1000.0, 971.0)["agree"] is True
    assert cross_check(1000.0, 1031.0)["agree"] is False
    low = cross_check(1000.0, 960.0)
    assert low["agree"] is False and low["relative_difference"] == pytest.approx(-0.04)
    missing = cross_check(None, 1000.0)
    assert missing["agree"] is None and missing["relative_difference"] is None and missing["reason"]
    assert cross_check(0.0, 5.0)["agree"] is None


# -- window summary and CSV ----------------------------------------------------------------------------

def two_gpu_samples():
    times = [i / 10 for i in range(21)]  # 0 .. 2 s, exact tenths
    a = rows_for("GPU-a", times, [200.0] * 21, mask=0x1, sm=1980,
                 energy=[1e6 + 200_000 * t for t in times])  # counter in mJ, consistent with 200 W
    b = rows_for("GPU-b", [t + 1e-4 for t in times], [100.0 + 50 * t for t in times], temp=70, sm=1500)
    b[12]["throttle_mask"] = 0x4 | 0x1  # power cap once, inside the window
    b[20]["throttle_mask"] = 0x40  # thermal, outside the window
    rows = [r for pair in zip(a, b) for r in pair]
    return Samples(rows=rows, marks=[("warmup_start", -0.05), ("window_start", 0.5), ("window_end", 1.5)],
                   interval_s=0.1)


def test_summarize_window_per_gpu_and_total():
    s = two_gpu_samples()
    summary = summarize_window(s, s.mark_time("window_start"), s.mark_time("window_end"))
    a, b, total = summary["gpus"]["GPU-a"], summary["gpus"]["GPU-b"], summary["total"]
    assert summary["duration_s"] == pytest.approx(1.0)
    assert a["energy_j"] == pytest.approx(200.0)
    assert b["energy_j"] == pytest.approx(100.0 + 25 * (1.5 ** 2 - 0.5 ** 2) - 50 * 1e-4)  # P = 100 + 50 (t - 1e-4), exact
    assert a["mean_power_w"] == pytest.approx(200.0) and a["max_power_w"] == 200.0
    assert a["mean_sm_clock_mhz"] == 1980 and b["mean_sm_clock_mhz"] == 1500
    assert b["max_temperature_c"] == 70
    assert a["throttle_reasons"] == []  # gpu_idle is benign
    assert b["throttle_reasons"] == ["sw_power_cap"]  # the thermal event was after the window
    assert a["samples"] == 11 and a["effective_interval_s"] == pytest.approx(0.1)
    assert a["counter_energy_j"] == pytest.approx(200.0) and b["counter_energy_j"] is None
    assert total["energy_j"] == pytest.approx(a["energy_j"] + b["energy_j"])
    assert total["mean_power_w"] == pytest.approx(total["energy_j"])
    assert total["max_power_w"] == pytest.approx(200.0 + 100.0 + 50 * 1.4)  # tick 14: both GPUs inside
    assert total["throttle_reasons"] == ["sw_power_cap"] and total["samples"] == 21  # GPU-b's tick 15 is just past the end
    assert total["counter_energy_j"] is None and total["cross_check"]["agree"] is None
    assert total["instant_energy_j"] == pytest.approx(total["energy_j"])  # same powers in both fields here


def test_summary_of_uncovered_window_says_why():
    s = two_gpu_samples()
    summary = summarize_window(s, -1.0, 1.0)
    assert summary["gpus"]["GPU-a"]["energy_j"] is None and summary["gpus"]["GPU-a"]["reason"]
    assert summary["total"]["energy_j"] is None


def test_mark_time_picks_named_mark():
    s = two_gpu_samples()
    s.marks.append(("window_start", 1.7))
    assert s.mark_time("window_start") == 1.7 and s.mark_time("window_start", 0) == 0.5
    with pytest.raises(KeyError):
        s.mark_time("nope")


def test_csv_is_tidy_and_parseable(tmp_path):
    s = two_gpu_samples()
    s.rows[3]["power_w"] = None  # a failed query is an empty cell, not 0
    path = to_csv(s, tmp_path / "sub" / "timeseries.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    samples = [r for r in rows if r["kind"] == "sample"]
    marks = [r for r in rows if r["kind"] == "mark"]
    assert len(samples) == 42 and {r["gpu"] for r in samples} == {"GPU-a", "GPU-b"}
    assert [r["mark"] for r in marks] == ["warmup_start", "window_start", "window_end"]
    assert float(marks[0]["t_s"]) == pytest.approx(-0.05) and float(samples[0]["t_s"]) == 0.0
    assert [float(r["t_s"]) for r in rows] == sorted(float(r["t_s"]) for r in rows)
    assert samples[3]["power_w"] == "" and float(samples[2]["power_w"]) == 200.0
    assert "sw_power_cap" in next(r for r in samples if r["tick"] == "12" and r["gpu"] == "GPU-b")["throttle_reasons"]
    assert {"power_w", "sm_clock_mhz", "mem_clock_mhz", "temperature_c", "gpu_util_pct", "mem_util_pct",
            "throttle_mask", "energy_mj", "mark"} <= set(rows[0])


# -- the thread, with NVML's query functions replaced (no GPU here) -----------------------------------

def test_sampler_thread_marks_stop_and_per_field_failures(monkeypatch):
    pynvml = pytest.importorskip("pynvml")
    calls = {"power": 0}

    def power(handle):
        calls["power"] += 1
        if calls["power"] == 2:  # one transient failure: None for that tick, sampling goes on
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return 250_000  # mW

    class Util:
        gpu, memory = 97, 35

    class FieldValue:  # NVML_FI_DEV_POWER_INSTANT answered
        nvmlReturn = pynvml.NVML_SUCCESS

        class value:
            uiVal = 260_000

    def temperature(handle, sensor):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def new_reasons(handle):  # an older driver: the new name is missing, the old one answers
        raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", power)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetClockInfo", lambda h, c: 1980 if c == pynvml.NVML_CLOCK_SM else 2619)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTemperature", temperature)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates", lambda h: Util())
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", new_reasons)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", lambda h: 0x4)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", lambda h: 123_456)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetFieldValues", lambda h, ids: [FieldValue()])

    sampler = NvmlSampler({"GPU-x": object()}, interval_s=0.01).start()
    t0 = sampler.mark("window_start")
    poll = threading.Event()
    while calls["power"] < 6:  # wait for ticks by watching them
        poll.wait(0.005)
    t1 = sampler.mark("window_end")
    samples = sampler.stop()
    assert not sampler._thread.is_alive()
    n = len(samples.rows)
    assert n >= 6 and samples.rows[0]["t"] <= t0 and samples.rows[-1]["t"] >= t1  # marks bracketed
    assert samples.rows[1]["power_w"] is None and samples.rows[0]["power_w"] == 250.0
    assert all(r["power_instant_w"] == 260.0 for r in samples.rows)
    assert all(r["temperature_c"] is None for r in samples.rows)
    assert "NotSupported" in samples.errors["GPU-x:temperature_c"] and "GPU-x:power_w" in samples.errors
    assert all(r["throttle_mask"] == 0x4 for r in samples.rows)
    assert samples.rows[0]["gpu_util_pct"] == 97 and samples.rows[0]["mem_clock_mhz"] == 2619
    assert [r["tick"] for r in samples.rows] == list(range(n))
    assert sampler.stop() is samples and len(samples.rows) == n  # stop is idempotent
    summary = summarize_window(samples, t0, t1)
    assert summary["gpus"]["GPU-x"]["mean_power_w"] == pytest.approx(250.0)
    assert summary["gpus"]["GPU-x"]["throttle_reasons"] == ["sw_power_cap"]
    assert math.isclose(summary["gpus"]["GPU-x"]["counter_energy_j"], 0.0)
    assert summary["gpus"]["GPU-x"]["instant_energy_j"] == pytest.approx(260.0 * (t1 - t0))
    with pytest.raises(RuntimeError):
        sampler.start()


def test_summary_cross_checks_sampled_energy_against_the_counter():
    times = [i / 10 for i in range(21)]
    rows = rows_for("GPU-a", times, [200.0] * 21, energy=[5e6 + 206_000 * t for t in times])  # counter: 206 W
    summary = summarize_window(Samples(rows=rows), 0.5, 1.5)
    check = summary["total"]["cross_check"]
    assert summary["total"]["counter_energy_j"] == pytest.approx(206.0)
    assert check["relative_difference"] == pytest.approx(200 / 206 - 1) and check["agree"] is True  # -2.9%
    assert summary["total"]["cross_check_instant"]["agree"] is True


def test_zeus_per_gpu_energy_is_keyed_by_uuid_like_the_other_meters(monkeypatch):
    """Audit 1.5: Zeus reports by CUDA index; per_gpu_energy_j must use the UUIDs the counter uses."""
    import sys
    from types import ModuleType, SimpleNamespace

    import pynvml

    from llem_bench.energy.meter import ZeusMeter

    class FakeMonitor:  # zeus need not be installed: only the index -> UUID mapping is under test
        def __init__(self, gpu_indices, approx_instant_energy):
            self.gpu_indices = gpu_indices

        def begin_window(self, name, sync_execution):
            pass

        def end_window(self, name, sync_execution):
            return SimpleNamespace(gpu_energy={2: 10.0, 3: 5.0})

    zeus_monitor = ModuleType("zeus.monitor")
    zeus_monitor.ZeusMonitor = FakeMonitor
    monkeypatch.setitem(sys.modules, "zeus", ModuleType("zeus"))
    monkeypatch.setitem(sys.modules, "zeus.monitor", zeus_monitor)
    counter = {"h-a": 1000, "h-b": 2000}
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", lambda h: counter[h])
    meter = ZeusMeter({"uuid-a": "h-a", "uuid-b": "h-b"}, cuda_ordinals=[2, 3])
    meter.begin()
    counter.update({"h-a": 11000, "h-b": 7100})
    window = meter.end()
    assert window.per_gpu_joules == {"uuid-a": 10.0, "uuid-b": 5.0} and window.joules == 15.0
    assert window.counter_joules == pytest.approx(15.1)


def test_serving_segment_carries_the_windows_throttling_and_temperature():
    """A serving segment reports what an offline window reports (the report's power table reads them)."""
    from llem_bench.scenarios.serving import energy_between

    s = two_gpu_samples()
    segment = energy_between(s, s.mark_time("window_start"), s.mark_time("window_end"), None)
    assert segment["throttle_reasons"] == ["sw_power_cap"] and segment["max_temperature_c"] == 70
    assert set(segment["throttle_fraction"]) == {"sw_power_cap"}


def test_gpu_busy_share_is_the_mean_nvml_utilization_per_gpu_and_over_gpus():
    s = two_gpu_samples()
    summary = summarize_window(s, s.mark_time("window_start"), s.mark_time("window_end"))
    assert summary["gpus"]["GPU-a"]["mean_gpu_util_pct"] == 100 and summary["total"]["mean_gpu_util_pct"] == 100
    partly = Samples(rows=[{**r, "gpu_util_pct": 25 if r["gpu"] == "GPU-b" else 75} for r in s.rows],
                     marks=s.marks, interval_s=s.interval_s)
    total = summarize_window(partly, s.mark_time("window_start"), s.mark_time("window_end"))["total"]
    assert total["mean_gpu_util_pct"] == 50  # the mean over the two GPUs


def test_a_gpu_idle_most_of_its_windows_is_called_host_bound():
    from llem_bench.harness.validity import host_bound_warning

    assert "GPU busy only 25% of the measured windows" in host_bound_warning(25.0)
    assert host_bound_warning(80.0) is None and host_bound_warning(None) is None
