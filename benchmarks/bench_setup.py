"""Set-up the per-call benchmark scripts share: one thread count for torch and the ExecuTorch
threadpool (timings compare the two, so both must use the same), and the synthetic model."""


def set_threads(n: int) -> None:
    import torch
    from executorch.extension.pybindings import portable_lib

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
