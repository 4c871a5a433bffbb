"""The Ray executor's dealings with the cluster: connect (or start a local Ray), check that the
actors fit, choose a node for each actor, read the running-task record an actor leaves, and keep
Ray's own notices off stdout.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from parainfer.errors import UsageError

# Driver environment variables a worker sees (local workers inherit the whole environment).
PASSED_ENV_PREFIXES = ("PARAINFER_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")


def connect(address: str | None, cpus_needed: int) -> bool:
    """Connect this process to the cluster at ``address``, or start a local Ray when None (with
    at least ``cpus_needed`` logical CPUs, as many processes as the local executor would run).
    Returns True when this call connected (the caller should ``ray.shutdown()`` at the end)."""
    import ray

    if ray.is_initialized():
        return False
    quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=max(os.cpu_count() or 1, cpus_needed), include_dashboard=False, **quiet)
    route_raylet_notices_to_logging()
    return True


def check_room(address: str | None, workers: int, cpus: float, gpus: float) -> None:
    """Raises UsageError when the cluster has fewer CPUs or GPUs in all than ``workers`` actors
    ask for (they would wait for room forever)."""
    import ray

    total = ray.cluster_resources()
    for name, each in (("CPU", cpus), ("GPU", gpus)):
        need = each * workers
        if need > total.get(name, 0.0) + 1e-9:
            raise UsageError(f"{workers} workers x {each:g} {name}s = {need:g} {name}s, but the Ray cluster at "
                             f"{address or 'local'} has {total.get(name, 0.0):g}; use fewer --workers or a "
                             f"smaller --{name.lower()}s-per-worker")


def pick_node(w: int, first: bool, cpus: float, gpus: float, taken: list[str | None],
              avoid: str | None = None) -> str | None:
    """NodeID worker ``w`` should prefer: at start the w-th live node (by address) with room for
    one actor, round robin; on a restart the live node with room holding the fewest of
    ``taken`` (node addresses of this job's live actors), other than ``avoid`` (the address of
    the node the dead actor ran on) while another has room: a node that was just lost still
    reads as alive until the GCS's health checks notice (seconds), and an actor placed there
    would die too. None: no live node has room."""
    import ray

    nodes = sorted((n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= cpus
                    and n["Resources"].get("GPU", 0) >= gpus), key=lambda n: n["NodeManagerAddress"])
    if not nodes:
        return None
    if first:
        return nodes[w % len(nodes)]["NodeID"]
    others = [n for n in nodes if n["NodeManagerAddress"] != avoid] or nodes
    return min(others, key=lambda n: taken.count(n["NodeManagerAddress"]))["NodeID"]


def load_error(error: BaseException) -> str:
    """The ModelLoadError message inside a Ray task error (Ray prefixes its own traceback)."""
    text = str(error)
    at = text.find("model failed to load:")
    return text[at:] if at >= 0 else f"model failed to load: {type(error).__name__}: {text}"


def running_task(actor: Any) -> int | None:
    """The index of the task ``actor`` last recorded starting (and forget the record), or None."""
    from ray.experimental import internal_kv

    from parainfer.executors.ray_actor import RUNNING_KV_NAMESPACE, running_key

    key = running_key(actor._actor_id.hex())
    try:
        value = internal_kv._internal_kv_get(key, namespace=RUNNING_KV_NAMESPACE)
        internal_kv._internal_kv_del(key, namespace=RUNNING_KV_NAMESPACE)
    except Exception:  # noqa: BLE001 - the GCS is unreachable: no record
        return None
    return int(value) if value else None


def route_raylet_notices_to_logging() -> None:
    """Ray's driver prints the raylet's notices ("A worker died or was killed ...") to STDOUT,
    where they would corrupt ``--output -``; the executor reports every death itself
    (WorkerFailed, the report), so send them to the ``parainfer.ray`` logger instead (debug).
    Uses Ray's private ``print_to_stdstream`` hook; does nothing if it is not there."""
    import ray._private.worker as ray_worker

    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_parainfer", False):
        return
    log = logging.getLogger("parainfer.ray")

    def route(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet":
            for line in data.get("lines", []):
                log.debug("%s", line)
        else:
            original(data, ignore_prefix)

    route._parainfer = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = route
