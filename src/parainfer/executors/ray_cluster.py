"""The Ray executor's dealings with the cluster: connect (or start a local Ray), check that the
actors fit, choose a node for each actor, count the room left for them, watch the nodes that
hold them (``NodeWatch``), read the running-task record an actor leaves, and keep Ray's own
notices off stdout.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from parainfer.errors import UsageError

# Driver environment variables a worker sees (local workers inherit the whole environment).
PASSED_ENV_PREFIXES = ("PARAINFER_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")

# NodeWatch: how often the driver opens a TCP connection to the raylet of each node holding
# workers, how long it waits for one, and how long a node may go unanswered before it counts as
# lost (a refused connection, a raylet gone while its machine answers, counts at once). Ray's
# own verdict (the GCS health checks) takes ~15-65 s with its defaults, and until then the calls
# to the node's actors just wait.
NODE_CHECK_S = 1.0
NODE_CONNECT_S = 1.0
NODE_LOST_S = 10.0


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
              avoid: str | None = None, lost: frozenset[str] | set[str] = frozenset()) -> str | None:
    """NodeID worker ``w`` should prefer: at start the w-th live node (by address) with room for
    one actor, round robin; on a restart the live node with room holding the fewest of
    ``taken`` (node addresses of this job's live actors), other than ``avoid`` (the address of
    the node the dead actor ran on) while another has room: a node that was just lost still
    reads as alive until the GCS's health checks notice (seconds), and an actor placed there
    would die too. Nodes in ``lost`` (addresses ``NodeWatch`` found lost) are never picked.
    None: no live node has room."""
    import ray

    nodes = sorted((n for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] not in lost
                    and n["Resources"].get("CPU", 0) >= cpus and n["Resources"].get("GPU", 0) >= gpus),
                   key=lambda n: n["NodeManagerAddress"])
    if not nodes:
        return None
    if first:
        return nodes[w % len(nodes)]["NodeID"]
    others = [n for n in nodes if n["NodeManagerAddress"] != avoid] or nodes
    return min(others, key=lambda n: taken.count(n["NodeManagerAddress"]))["NodeID"]


def room_for(cpus: float, gpus: float, placed: list[str | None], lost: set[str]) -> int:
    """How many more actors of ``cpus`` CPUs and ``gpus`` GPUs the live nodes not in ``lost``
    hold, counting this job's own actors only (``placed``: the node address of each live actor,
    None while it loads: it takes room somewhere). Other jobs' use of the cluster is not seen."""
    import ray

    room = 0
    for n in ray.nodes():
        where = n["NodeManagerAddress"]
        if not n["Alive"] or where in lost:
            continue
        mine = placed.count(where)
        fit = math.floor((n["Resources"].get("CPU", 0.0) - mine * cpus) / cpus + 1e-9)
        if gpus > 0:
            fit = min(fit, math.floor((n["Resources"].get("GPU", 0.0) - mine * gpus) / gpus + 1e-9))
        room += max(0, fit)
    return max(0, room - placed.count(None))


def raylet_ports() -> dict[str, int]:
    """{node address: its raylet's port} of the live nodes (``ray.nodes()``)."""
    import ray

    return {n["NodeManagerAddress"]: n["NodeManagerPort"] for n in ray.nodes() if n["Alive"]}


def probe_raylet(address: str, port: int, timeout: float = NODE_CONNECT_S) -> str | None:
    """Open (and close) a TCP connection to a node's raylet; None when it opens within
    ``timeout`` seconds, else why not ("refused": the raylet is gone; "timed out", "no route to
    host": the machine does not answer)."""
    try:
        socket.create_connection((address, port), timeout=timeout).close()
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timed out"
    except OSError as e:
        return (e.strerror or type(e).__name__).lower()
    return None


class NodeWatch:
    """A driver thread that finds lost nodes sooner than Ray does.

    Every ``period`` seconds it probes the raylet of each node ``targets()`` names
    ({address: raylet port}: the nodes holding live workers). A refused connection (the raylet is
    gone) makes the node lost at once; a node that has not answered for ``lost_after`` seconds
    (a machine off the network) is lost too. ``take_lost()`` hands the driver each lost node
    once: {address: why, e.g. "its raylet (port 40123) refuses connections"}.

    Args:
        targets: called in the thread; returns {address: port} of the nodes to watch.
        period, connect_s, lost_after: seconds (defaults NODE_CHECK_S, NODE_CONNECT_S, NODE_LOST_S).
    """

    def __init__(self, targets: Callable[[], dict[str, int]], period: float = NODE_CHECK_S,
                 connect_s: float = NODE_CONNECT_S, lost_after: float = NODE_LOST_S):
        self.targets, self.period, self.connect_s, self.lost_after = targets, period, connect_s, lost_after
        self._lost: dict[str, str] = {}
        self._told: set[tuple[str, int]] = set()
        self._failing: dict[str, float] = {}  # address -> when it first did not answer
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (a daemon; ``stop`` ends it)."""
        self._thread = threading.Thread(target=self._run, name="parainfer-node-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def take_lost(self) -> dict[str, str]:
        """Nodes found lost since the last call: {address: why}."""
        if not self._lost:
            return {}
        with self._lock:
            lost, self._lost = self._lost, {}
        return lost

    def verdict(self, address: str, port: int | None) -> str | None:
        """Probe one node now (the driver asks when Ray reports an actor dead): why it is lost,
        or None when its raylet answers (or its port is unknown)."""
        if port is None:
            return None
        why = probe_raylet(address, port, self.connect_s)
        return None if why is None else self._why(port, why, 0.0)

    @staticmethod
    def _why(port: int, why: str, silent_s: float) -> str:
        if why == "refused":
            return f"its raylet (port {port}) refuses connections"
        if silent_s <= 0:
            return f"its raylet (port {port}) does not answer ({why})"
        return f"its raylet (port {port}) has not answered for {silent_s:.0f} s ({why})"

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                targets = self.targets()
            except Exception:  # the driver is shutting down
                logging.getLogger("parainfer.ray").debug("node watch: no targets", exc_info=True)
                continue
            for address, port in targets.items():
                if (address, port) in self._told:  # a raylet started again there has another port
                    continue
                why = probe_raylet(address, port, self.connect_s)
                now = time.monotonic()
                if why is None:
                    self._failing.pop(address, None)
                    continue
                silent = now - self._failing.setdefault(address, now)
                if why == "refused" or silent + self.connect_s >= self.lost_after:
                    with self._lock:
                        self._lost[address] = self._why(port, why, silent + self.connect_s)
                    self._told.add((address, port))


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
