"""Where the drives run: ``run_local`` (worker processes on this machine) or ``run_ray`` (one Ray
task per drive on a Ray cluster). Both call ``app.batch.drive.run_drive`` once per drive and hand
each drive's row to ``on_row`` as it completes; neither has a queue or a protocol of its own.

- local: a ``concurrent.futures.ProcessPoolExecutor`` of N spawned processes, each running one
  drive at a time with a single-threaded pipeline. A worker killed mid-drive (``kill -9``, the
  OOM killer) breaks the pool: the drives that had not completed are run again in a fresh pool
  (their partial temp folders are removed by the batch), so every drive is done once.
- ray: ``ray.remote(max_retries=...)`` tasks, one per drive (a drive's frames stay in order on one
  worker: the monitor's timers and PERCLOS need the whole drive). The app's code and its shipped
  models (assets/) travel as the job's ``runtime_env`` working_dir; the 3DMM file the settings
  name is put in Ray's object store and written to a local cache on each worker node, so no
  worker reads a path that only the head node has. A worker or a node that dies mid-drive: Ray
  runs the task again elsewhere. The drives are written under ``--out``, which every node must
  see (a shared file system).
"""
from __future__ import annotations

import hashlib
import os
import signal
import tempfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from app.batch.drive import DriveJob, run_drive

ROOT = Path(__file__).resolve().parents[2]
# a drive whose worker dies this many times is a failed row (a file that crashes the decoder)
MAX_ATTEMPTS = 3
# the repository parts a Ray worker does not need (the working_dir it gets is app/ + assets/)
# (gitignore patterns, "/" = the repository root); the 3DMM goes through the object store instead
RAY_EXCLUDES = ["/.git", "/.ci", "/tests", "/docs", "/export", "/scripts", "/models", "/recordings", "/build",
                "/dist", "/assets/models/*.onnx", "*.mp4", "*.parquet", "__pycache__", "*.egg-info"]
RAY_MAX_RETRIES = 3


class Interrupted(Exception):
    """Ctrl-C during the batch: the rows completed so far were handed over."""


# ---------------------------------------------------------------------- local
_SIGINT = False     # a worker saw Ctrl-C outside a drive's Runner (which has its own handler)


def _note_sigint(signum, frame_) -> None:
    global _SIGINT
    _SIGINT = True


def _worker_init() -> None:
    # Ctrl-C reaches every process of the terminal's group. In a worker it is noted (a drive that
    # has not started its frames yet stops before them) and, while a drive runs, the Runner's own
    # handler ends the drive at the next frame (status "interrupted", its temp folder removed);
    # the parent hands out no more drives
    signal.signal(signal.SIGINT, _note_sigint)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _local_drive(job: DriveJob) -> dict:
    return run_drive(job, stop_requested=lambda: _SIGINT)


def run_local(jobs: list[DriveJob], workers: int, on_row: Callable[[dict], None],
              say: Callable[[str], None]) -> None:
    """At most ``workers`` drives are handed to the pool at a time (none waits in its queue), so
    Ctrl-C leaves nothing queued and a dead worker takes only the drives that were running."""
    import multiprocessing as mp

    queue = list(jobs)
    attempts = {j.drive_id: 0 for j in jobs}
    ctx = mp.get_context("spawn")
    while queue:
        pool = ProcessPoolExecutor(max_workers=max(1, min(workers, len(queue))), mp_context=ctx,
                                   initializer=_worker_init)
        running: dict = {}
        redo: list[DriveJob] = []
        try:
            while queue or running:
                while queue and len(running) < workers and not redo:
                    j = queue.pop(0)
                    running[pool.submit(_local_drive, j)] = j
                done, _ = wait(set(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    j = running.pop(fut)
                    try:
                        row = fut.result()
                    except BrokenProcessPool:
                        redo.append(j)
                        continue
                    on_row(row)
                if redo and not running:
                    break
        except KeyboardInterrupt:
            # the running drives stop at their next frame (their own Ctrl-C); keep what completed
            for fut, j in running.items():
                try:
                    on_row(fut.result())
                except (BrokenProcessPool, KeyboardInterrupt):
                    pass
            pool.shutdown(wait=False, cancel_futures=True)
            raise Interrupted()
        pool.shutdown(wait=True)
        if redo:
            # the pool ends every worker when one dies: the drives that were running go first
            # into a fresh pool; one that keeps killing its worker is a failed row
            say(f"warning: a worker process died; running its drive(s) again: "
                f"{', '.join(j.drive_id for j in redo)}")
            again = []
            for j in redo:
                attempts[j.drive_id] += 1
                if attempts[j.drive_id] >= MAX_ATTEMPTS:
                    on_row({"drive_id": j.drive_id, "path": j.path, "status": "failed", "engine": j.engine,
                            "error": f"the worker process died {MAX_ATTEMPTS} times on this drive"})
                else:
                    again.append(j)
            queue = again + queue


# ---------------------------------------------------------------------- ray
def _model_cache(name: str, data: bytes) -> str:
    """The shipped model bytes as a file on this node (written once per content, atomically)."""
    h = hashlib.sha256(data).hexdigest()[:16]
    # the file keeps its name: the model's name in the outputs comes from it
    d = Path(tempfile.gettempdir()) / "face3d-batch-models" / h
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    if not p.is_file():
        tmp = d / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, p)
    return str(p)


def ray_drive(job: DriveJob, model: Optional[tuple]) -> dict:
    """The Ray task: the shipped 3DMM (name, bytes) into the node's cache, then the drive."""
    if model is not None:
        job = replace(job, settings=replace(job.settings, model=_model_cache(*model)))
    return run_drive(job)


def run_ray(jobs: list[DriveJob], address: Optional[str], on_row: Callable[[dict], None],
            say: Callable[[str], None], *, gpus_per_task: float = 0.0) -> None:
    import ray

    from app.pipeline import resolve_model_path

    # a cluster on this machine's loopback (the tests, the benchmark) keeps the driver there too
    host = (address or "").rsplit(":", 1)[0]
    node_ip = {"_node_ip_address": "127.0.0.1"} if host in ("127.0.0.1", "localhost") else {}
    ray.init(address=address, log_to_driver=False, include_dashboard=False, **node_ip,
             runtime_env={"working_dir": str(ROOT), "excludes": RAY_EXCLUDES,
                          "env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        settings = jobs[0].settings
        path = resolve_model_path(settings.model)
        model_ref = None
        if path is not None:
            model_ref = ray.put((Path(path).name, Path(path).read_bytes()))
        task = ray.remote(max_retries=RAY_MAX_RETRIES, retry_exceptions=False, num_cpus=1,
                          num_gpus=gpus_per_task)(ray_drive)
        refs = {task.remote(j, model_ref): j for j in jobs}
        left = list(refs)
        try:
            while left:
                done, left = ray.wait(left, num_returns=1)
                for r in done:
                    j = refs[r]
                    try:
                        row = ray.get(r)
                    except (ray.exceptions.RayError) as e:
                        # the task died more than RAY_MAX_RETRIES times (its node, its worker)
                        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                        row = {"drive_id": j.drive_id, "path": j.path, "status": "failed", "engine": "ray",
                               "error": f"ray: {type(e).__name__}: {msg}"}
                    on_row(row)
        except KeyboardInterrupt:
            for r in left:
                ray.cancel(r)
            for r in left:
                try:
                    row = ray.get(r)
                except ray.exceptions.RayError:
                    continue
                if row.get("status") in ("ok", "failed"):
                    on_row(row)
            raise Interrupted()
    finally:
        ray.shutdown()
