"""Set-up the per-call benchmark scripts share: one thread count for torch and the ExecuTorch
threadpool (timings compare the two, so both must use the same), and the synthetic model."""
import etam_export.common  # noqa: F401 (first: its warning and torchao log filters quiet what follows)


def alternate_ms(methods: dict, args: list, reps: int) -> dict:
    """{name: [ms per call]} calling each loaded ExecuTorch method once per round, the order
    reversed every round (after one untimed warm-up call each), so a machine that slows down
    mid-run charges every method alike."""
    import time

    for m in methods.values():
        m.execute(args)
    ms = {k: [] for k in methods}
    order = list(methods)
    for r in range(reps):
        for name in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            methods[name].execute(args)
            ms[name].append((time.perf_counter() - t0) * 1e3)
    return ms


def set_threads(n: int) -> None:
    """Also quiets what the scripts' imports print on every run: ExecuTorch's threadpool
    cpuinfo probes, torchao's missing-kernel lines, torch's LeafSpec deprecation."""
    import torch
    from executorch.extension.pybindings import portable_lib
    from etam_mobile.runtime.exported import without_native_lines

    with without_native_lines("cpuinfo_utils"):
        portable_lib._unsafe_reset_threadpool(n)
    torch.set_num_threads(n)


def synthetic_model(config: str):
    """(cfg, model, capacities) with synthetic weights (seed 0): speed does not depend on weights."""
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config
    from etam_mobile.contracts import Capacities

    cfg = get_config(config)
    model, _ = load_model(cfg, None, seed=0, quiet=True)
    return cfg, model, Capacities()


def full_bank_inputs(cfg, caps, valid_mem: int | None = None, valid_ptr: int | None = None) -> list:
    """Memory-attention inputs at full capacity (random features, seed 0): every slot valid, or the
    first valid_mem memories / valid_ptr pointers (the rest padding, as memory_bank.gather lays out)."""
    import numpy as np

    K, P = caps.memory_slots(cfg), caps.ptr_slots(cfg)
    rng = np.random.default_rng(0)
    h, C, M = cfg.feat_size, cfg.d_model, cfg.mem_dim
    mem_valid = (np.arange(K) < (K if valid_mem is None else valid_mem)).astype(np.float32)
    ptr_valid = (np.arange(P) < (P if valid_ptr is None else valid_ptr)).astype(np.float32)
    return [rng.standard_normal((1, C, h, h)).astype(np.float32), rng.standard_normal((K, M, h, h)).astype(np.float32),
            (np.arange(K, dtype=np.int32) % (cfg.num_maskmem - 1)), mem_valid,
            rng.standard_normal((P, C)).astype(np.float32), ptr_valid]
