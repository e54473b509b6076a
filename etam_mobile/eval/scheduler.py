"""Run tasks on a local process pool or on Ray; a dead worker fails only its own task.

Both schedulers keep one task per worker in flight. A task whose worker dies (SIGKILL,
out of memory) or that raises is retried once on a fresh worker, then reported as failed
with the reason; every other task carries on. Workers load their backends once
(`tasks.init_worker`) and keep them for every task they are given.
"""
from __future__ import annotations

import multiprocessing as mp
import socket
import traceback
from collections import deque
from multiprocessing.connection import wait

from . import EvalError
from .tasks import init_worker, run_task

MAX_ATTEMPTS = 2  # first try + one retry


def _pool_worker(conn, variants, threads) -> None:
    init_worker(variants, threads)
    conn.send({"status": "ready"})
    while True:
        task = conn.recv()
        if task is None:
            return
        try:
            res = run_task(task)
        except Exception as exc:  # reported to the parent, which retries once
            res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(limit=5)}
        conn.send(res)


class _Slot:
    def __init__(self, ctx, variants, threads):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_pool_worker, args=(child, variants, threads), daemon=True)
        self.proc.start()
        child.close()
        self.task = None
        self.ready = False


def _fail(task_id, attempts, reason, queue, failures, on_retry):
    attempts[task_id] = attempts.get(task_id, 0) + 1
    if attempts[task_id] < MAX_ATTEMPTS:
        on_retry(task_id, reason)
        return True
    failures[task_id] = reason
    return False


def run_local(tasks: list, variants, workers: int, threads=None, on_done=None, on_retry=None) -> tuple:
    """Run [(id, task)] on `workers` spawned processes.

    Returns ({id: result}, {id: failure reason}, cluster info).
    """
    on_done = on_done or (lambda tid, res: None)
    on_retry = on_retry or (lambda tid, reason: None)
    ctx = mp.get_context("spawn")
    queue = deque(tasks)
    results, failures, attempts = {}, {}, {}
    slots = [_Slot(ctx, variants, threads) for _ in range(min(workers, max(len(queue), 1)))]
    try:
        while queue or any(s.task is not None for s in slots):
            for s in slots:
                if s.ready and s.task is None and queue:
                    s.task = queue.popleft()
                    s.conn.send(s.task[1])
            waitables = {}
            for s in slots:
                waitables[s.conn] = s
                waitables[s.proc.sentinel] = s
            for obj in wait(list(waitables)):
                s = waitables[obj]
                if s not in slots:
                    continue
                msg = None
                try:
                    if s.conn.poll():
                        msg = s.conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is not None and msg.get("status") == "ready":
                    s.ready = True
                    continue
                if msg is not None and s.task is not None:
                    tid, task = s.task
                    s.task = None
                    if msg["status"] == "ok":
                        results[tid] = msg
                        on_done(tid, msg)
                    elif _fail(tid, attempts, msg["error"], queue, failures, on_retry):
                        queue.append((tid, task))
                    continue
                if not s.proc.is_alive():
                    s.proc.join()
                    code = s.proc.exitcode
                    reason = f"worker process died (exit code {code}{', killed by signal ' + str(-code) if code and code < 0 else ''})"
                    if s.task is not None:
                        tid, task = s.task
                        if _fail(tid, attempts, reason, queue, failures, on_retry):
                            queue.append((tid, task))
                    elif not s.ready:
                        raise EvalError(f"a worker could not start ({reason}); run with --workers 1 to see why")
                    slots[slots.index(s)] = _Slot(ctx, variants, threads)
    finally:
        for s in slots:
            try:
                s.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for s in slots:
            s.proc.join(timeout=10)
            if s.proc.is_alive():
                s.proc.kill()
    return results, failures, {"scheduler": "local", "nodes": 1, "cpus": mp.cpu_count()}


# ---- Ray ---------------------------------------------------------------------------------

def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds, naming the address, instead of letting ray.init wait a minute."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise EvalError(f"--ray {address} is not HOST:PORT (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001); "
                        "pass the address `ray start --head` printed")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise EvalError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it with "
                        "`ray start --head` there, or drop the address to start a local Ray") from None


def precheck_ray(address: str | None) -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise EvalError("--ray needs the ray package; pip install 'etam-mobile[eval]'") from None
    if address and address != "auto":
        _check_reachable(address)


def start_ray(address: str | None, workers: int):
    """Join ADDRESS or start a local Ray with `workers` CPUs. Returns (ray, started_here)."""
    try:
        import ray
    except ImportError:
        raise EvalError("--ray needs the ray package; pip install 'etam-mobile[eval]'") from None
    if address and address != "auto":
        _check_reachable(address)
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=True)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers, object_store_memory=100 * 2**20, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise EvalError(f"cannot start or join Ray{' at ' + address if address else ''} ({exc}); "
                        "check `ray status`, or run without --ray") from None
    return ray


def run_ray(tasks: list, variants, workers: int, threads=None, address=None, on_done=None, on_retry=None) -> tuple:
    """Same contract as run_local, with one Ray actor per worker."""
    on_done = on_done or (lambda tid, res: None)
    on_retry = on_retry or (lambda tid, reason: None)
    ray = start_ray(address, workers)
    from ray.exceptions import RayActorError, RayTaskError

    @ray.remote(num_cpus=1, max_restarts=0)
    class EvalWorker:
        def __init__(self, variants, threads):
            init_worker(variants, threads)

        def run(self, task):
            return run_task(task)

    queue = deque(tasks)
    results, failures, attempts = {}, {}, {}
    actors = [EvalWorker.remote(variants, threads) for _ in range(min(workers, max(len(queue), 1)))]
    inflight = {}  # ref -> (actor, (tid, task))
    idle = list(actors)
    try:
        while queue or inflight:
            while idle and queue:
                actor = idle.pop()
                item = queue.popleft()
                inflight[actor.run.remote(item[1])] = (actor, item)
            done, _ = ray.wait(list(inflight), num_returns=1)
            for ref in done:
                actor, (tid, task) = inflight.pop(ref)
                try:
                    res = ray.get(ref)
                except RayActorError as exc:
                    reason = f"Ray worker died ({type(exc).__name__})"
                    ray.kill(actor)
                    actor = EvalWorker.remote(variants, threads)
                    actors.append(actor)
                except RayTaskError as exc:
                    cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                    reason = f"{type(cause).__name__}: {cause}"
                else:
                    results[tid] = res
                    on_done(tid, res)
                    idle.append(actor)
                    continue
                idle.append(actor)
                if _fail(tid, attempts, reason, queue, failures, on_retry):
                    queue.append((tid, task))
        info = {"scheduler": "ray", "address": address or "local", "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
                "cpus": ray.cluster_resources().get("CPU")}
    finally:
        for a in actors:
            try:
                ray.kill(a)
            except Exception:
                pass
        ray.shutdown()  # stops a Ray started here; only disconnects from a joined cluster
    return results, failures, info
