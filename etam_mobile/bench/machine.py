"""Machine limits: the measured fp32 matmul throughput, CPU description, resident memory."""
from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path


from .common import _log

def rss_mb() -> dict:
    """Current (VmRSS) and peak (ru_maxrss) resident memory of this process in MiB."""
    cur = hwm = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    except OSError:
        pass
    if hwm is not None:  # Linux: peak of this process image (ru_maxrss survives fork+exec from the parent)
        peak = hwm
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere
    return {"current_mb": None if cur is None else round(cur, 1), "peak_mb": round(peak, 1)}



# ---- machine ----------------------------------------------------------------------------

def matmul_peak(threads: int | None = None, sizes=(1024, 2048), min_seconds: float = 0.5) -> dict:
    """Best measured fp32 torch.matmul throughput (GFLOP/s) on square matrices."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        best, per_size = 0.0, {}
        for n in sizes:
            a, b = torch.randn(n, n), torch.randn(n, n)
            c = torch.empty(n, n)
            torch.matmul(a, b, out=c)  # warm-up
            rates, t_start = [], time.perf_counter()
            while time.perf_counter() - t_start < min_seconds or len(rates) < 3:
                t0 = time.perf_counter()
                torch.matmul(a, b, out=c)
                rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
            per_size[str(n)] = round(max(rates), 1)
            best = max(best, max(rates))
        return {"gflops": round(best, 1), "threads": torch.get_num_threads(), "by_size": per_size}
    finally:
        torch.set_num_threads(old)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(quiet: bool = True, measure: bool = True, threads: int | None = None) -> dict:
    import torch

    from etam_export.exporter import _versions

    info = {
        "host": platform.node(), "platform": platform.platform(), "machine": platform.machine(),
        "cpu": _cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "versions": _versions(),
    }
    try:
        import onnxruntime

        info["versions"]["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        from executorch.extension.pybindings import portable_lib

        info["executorch_threads"] = int(portable_lib._threadpool_get_thread_count())
    except Exception:
        pass
    if measure:
        _log(quiet, "bench: measuring fp32 matmul throughput ...")
        info["matmul_fp32"] = {"all_threads": matmul_peak(threads=os.cpu_count()), "one_thread": matmul_peak(threads=1)}
        if threads and threads not in (1, os.cpu_count()):
            info["matmul_fp32"][f"{threads}_threads"] = matmul_peak(threads=threads)
        used = {1: "one_thread", os.cpu_count(): "all_threads"}.get(threads or os.cpu_count(), f"{threads}_threads")
        info["matmul_fp32_gflops"] = info["matmul_fp32"][used]["gflops"]
        info["matmul_fp32_reference"] = (f"{used}: the thread count the backends ran with; fractions of the "
                                         "limit are relative to this number")
    return info


