"""`etam-mobile bench`: per-stage and per-frame speed of every backend on one run.

Every backend tracks the same synthetic clip with the same prompts through the real
`Tracker`; each `backend.run(stage, ...)` call and each tracked frame is timed after a
warm-up session that is not counted. Each backend runs in its own subprocess so its peak
resident memory is its own. FLOPs are counted (torch FlopCounterMode on the stage modules at
the exact input shapes of every call), and set against this machine's measured fp32 matmul
throughput. Memory-attention cost is measured against the number of memory frames. Results go
to JSON, Markdown and a PNG; `benchmarks/merge_device_results.py` adds on-device numbers.

One job per module: `common` (constants), `machine` (limits), `flops` (counting), `running`
(the per-backend worker), `analysis` (raw -> result record), `scaling` (memory-attention
table), `artifacts` (export folder), `reports` (Markdown / outputs), `plots` (PNG),
`variants` (ExecuTorch variants side by side: folders, cache, accuracy vs eager),
`command` (the CLI and the whole run).
"""
from .analysis import analyse
from .command import cmd_bench, parse_backends, register, run_bench
from .common import BENCH_BACKENDS, CROSS_ATTN_VARIANTS, SCHEMA, SCHEMA_VERSION, BenchError, summarize
from .flops import FlopTable, count_flops
from .machine import machine_info, matmul_peak, rss_mb
from .reports import render_markdown, timing_table, write_outputs
from .running import run_backend
from .scaling import memory_attention_scaling

__all__ = ["BENCH_BACKENDS", "CROSS_ATTN_VARIANTS", "SCHEMA", "SCHEMA_VERSION", "BenchError", "FlopTable", "analyse",
           "cmd_bench", "count_flops", "machine_info", "matmul_peak", "memory_attention_scaling", "parse_backends",
           "register", "render_markdown", "rss_mb", "run_backend", "run_bench", "summarize", "timing_table",
           "write_outputs"]
