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


def connect(address: str | None, cpus_needed: int, runtime_env: dict[str, Any] | None = None) -> bool:
    """Connect this process to the cluster at ``address``, or start a local Ray when None (with
    at least ``cpus_needed`` logical CPUs, as many processes as the local executor would run).
    Returns True when this call connected (the caller should ``ray.shutdown()`` at the end).
    ``runtime_env``: the job's Ray runtime environment (``ray_ship``: the user's modules as
    ``py_modules``, which Ray uploads from local paths only at this job level).

    With no address the job always starts a Ray of its own (``address="local"``), even when
    another Ray runs on this machine (``ray.init()`` would attach to that one). With an address,
    ``check_head`` first makes sure a Ray head answers there and accepts this driver's token, so
    a wrong address or token fails in seconds with one line instead of Ray's retries.

    Raises:
        UsageError: the head at ``address`` cannot be reached, refuses the token, or the
            connection fails (the CLI exits with 2).
    """
    import ray

    if ray.is_initialized():
        return False
    quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
    if address:
        check_head(address)
        try:
            ray.init(address=address, runtime_env=runtime_env or None, **quiet)
        except (ConnectionError, RuntimeError, ray.exceptions.RayError) as e:
            raise UsageError(head_error(address, e)) from e
    else:
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, cpus_needed), include_dashboard=False, **quiet)
    route_raylet_notices_to_logging()
    return True


# check_head: how long the TCP connection to the head's GCS port may take, and how long the GCS
# may take to answer (a separate process asks it for the cluster id, so Ray's own warnings stay
# out of the driver's stderr). Ray alone retries a dead head for minutes and a refused token
# for ~20 s.
HEAD_CONNECT_S = 5.0
HEAD_ANSWER_S = 30.0
_GCS_PROBE = """
import sys
try:
    from ray._raylet import GcsClient
except Exception:
    sys.exit(3)
try:
    GcsClient(address=sys.argv[1], cluster_id=None)
except Exception as e:
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    print(text.strip().splitlines()[0] if text.strip() else type(e).__name__)
    sys.exit(10 if type(e).__name__ == "AuthenticationError" else 11)
"""


def unreachable(address: str, why: str) -> str:
    """The one line for a head that does not answer at ``address``."""
    return f"cannot reach the Ray head at {address}: {why}; is `ray start --head` running there? (docs/cluster.md)"


def token_refused(address: str) -> str:
    """The one line for a head that refuses this driver's token (or its lack of one)."""
    mode = "" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else "set RAY_AUTH_MODE=token and "
    return (f"the Ray cluster at {address} refused this driver's token: {mode}set RAY_AUTH_TOKEN_PATH to the "
            f"cluster's token file (docs/cluster.md, \"Token\")")


def head_error(address: str, error: BaseException) -> str:
    """The one line for ``ray.init(address=...)`` failing with ``error`` (after ``check_head``
    passed: the head went away meanwhile, or Ray failed otherwise)."""
    text = " ".join(str(e) for e in (error, error.__cause__) if e is not None)
    if "InvalidAuthToken" in text or "Unauthenticated" in text or type(error).__name__ == "AuthenticationError":
        return token_refused(address)
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"cannot connect to the Ray cluster at {address}: {first} (docs/cluster.md)"


def check_head(address: str, connect_s: float = HEAD_CONNECT_S, answer_s: float = HEAD_ANSWER_S) -> None:
    """Make sure a Ray head answers at ``address`` (HOST:PORT, its GCS) and takes this driver's
    token (``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN_PATH``/``RAY_AUTH_TOKEN``, as Ray reads them),
    within ``connect_s`` seconds for the TCP connection and ``answer_s`` for the GCS's answer.
    Addresses Ray resolves itself (``auto``, ``ray://...``) are left to Ray.

    Raises:
        UsageError: ``address`` is not HOST:PORT, nothing answers there, the GCS refuses the
            token, or it does not answer in time; the message says which and what to do.
    """
    import subprocess
    import sys

    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--address (or RAY_ADDRESS) must be HOST:PORT of the Ray head (e.g. 10.0.0.1:6379), got {address!r}")
    token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if token_path and not os.environ.get("RAY_AUTH_TOKEN"):
        try:
            with open(os.path.expanduser(token_path), "rb"):
                pass
        except OSError as e:
            raise UsageError(f"RAY_AUTH_TOKEN_PATH={token_path!r} cannot be read ({e.strerror or e}): set it to the "
                             f"Ray cluster's token file (docs/cluster.md, \"Token\")") from None
    why = probe_raylet(host.strip("[]"), int(port), connect_s)
    if why is not None:
        raise UsageError(unreachable(address, "connection refused" if why == "refused" else why))
    try:
        proc = subprocess.run([sys.executable, "-c", _GCS_PROBE, address], capture_output=True, text=True,
                              timeout=answer_s)
    except subprocess.TimeoutExpired:
        raise UsageError(unreachable(address, f"port {port} accepts connections but no Ray GCS answered there "
                                              f"within {answer_s:g} s")) from None
    if proc.returncode == 10:
        raise UsageError(token_refused(address))
    if proc.returncode == 11:
        raise UsageError(unreachable(address, proc.stdout.strip() or "its GCS failed to answer"))
    # 0: it answered; anything else (no GcsClient in this Ray): ray.init will tell


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


def draining_nodes() -> set[str]:
    """Addresses of the live nodes Ray is draining (``ray drain-node``, a preemption notice, the
    autoscaler scaling in): the GCS's draining list (Ray's private ``GcsClient.get_draining_nodes``,
    as Ray Serve reads it), mapped to addresses by ``ray.nodes()``. Empty when the GCS cannot say."""
    import ray

    try:
        ids = ray._private.worker.global_worker.gcs_client.get_draining_nodes(timeout=2)
    except Exception:  # noqa: BLE001 - no such call in this Ray, or the GCS is busy: none known
        logging.getLogger("parainfer.ray").debug("draining nodes unknown", exc_info=True)
        return set()
    hexes = {k.hex() if isinstance(k, bytes) else str(k) for k in ids}
    return {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"] and n["NodeID"] in hexes} if hexes else set()


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

    With ``head`` (the cluster's HOST:PORT) it also probes the head's GCS port: when the GCS
    stops answering (killed, restarting, its machine gone) and when it answers again,
    ``take_notes()`` hands the driver one line each (``head_down_note``, ``head_back_note``).
    Ray itself waits for a GCS that went away (``RAY_gcs_rpc_server_reconnect_timeout_s``,
    60 s by default); whether the job survives depends on the GCS keeping its tables in Redis
    (docs/cluster.md, "What survives which fault"), which the driver cannot see from here.

    Args:
        targets: called in the thread; returns {address: port} of the nodes to watch.
        head: "HOST:PORT" of the head's GCS, or None (a local Ray, ``auto``, ``ray://``: not watched).
        cluster_id: hex id of the cluster this driver joined (``cluster_id()``): a GCS that answers
            again under another id came back without its tables (no Redis); ``head_reset`` then
            holds the line for the driver's error, and Ray itself ends the driver soon after.
        period, connect_s, lost_after: seconds (defaults NODE_CHECK_S, NODE_CONNECT_S, NODE_LOST_S).
    """

    def __init__(self, targets: Callable[[], dict[str, int]], period: float = NODE_CHECK_S,
                 connect_s: float = NODE_CONNECT_S, lost_after: float = NODE_LOST_S, head: str | None = None,
                 cluster_id: str | None = None):
        self.targets, self.period, self.connect_s, self.lost_after = targets, period, connect_s, lost_after
        host, sep, port = (head or "").rpartition(":")
        self.head = (host.strip("[]"), int(port)) if sep and host and port.isdigit() and "://" not in head else None
        self._head_down: float | None = None  # when the head's GCS stopped answering
        self.cluster_id = cluster_id
        self.head_reset: str | None = None
        self._notes: list[str] = []
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

    def take_notes(self) -> list[str]:
        """Lines about the head's GCS since the last call (gone quiet, back), oldest first."""
        if not self._notes:
            return []
        with self._lock:
            notes, self._notes = self._notes, []
        return notes

    def _check_head(self) -> None:
        host, port = self.head  # type: ignore[misc]
        why = probe_raylet(host, port, self.connect_s)
        now = time.monotonic()
        note = None
        if why is not None and self._head_down is None:
            self._head_down = now
            note = head_down_note(f"{host}:{port}", "connection refused" if why == "refused" else why)
        elif why is None and self._head_down is not None:
            now_id = gcs_cluster_id(f"{host}:{port}") if self.cluster_id else None
            if now_id and now_id != self.cluster_id:
                self.head_reset = head_reset_error(f"{host}:{port}")
            else:
                note = head_back_note(f"{host}:{port}", now - self._head_down)
            self._head_down = None
        if note:
            with self._lock:
                self._notes.append(note)

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
            if self.head is not None:
                self._check_head()
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


def head_down_note(address: str, why: str) -> str:
    """The driver's line when the head's GCS at ``address`` stops answering (``why``)."""
    return (f"the Ray head's GCS at {address} does not answer ({why}): running workers go on and Ray waits for it "
            f"(RAY_gcs_rpc_server_reconnect_timeout_s, 60 s by default); with GCS fault tolerance (Redis) the job "
            f"goes on once it is back; if the job fails instead, restart the cluster and rerun the same command: it "
            f"resumes from its checkpoint (docs/cluster.md, \"What survives which fault\")")


def head_reset_error(address: str) -> str:
    """The driver's error when the head's GCS at ``address`` came back as another cluster."""
    return (f"the Ray head's GCS at {address} restarted without its state (a new cluster: no GCS fault tolerance, "
            f"its tables were not kept in Redis), so this job's workers are gone: restart every node of the cluster "
            f"(`ray stop`, `ray start`) and rerun the same command: it resumes from its checkpoint (docs/cluster.md, "
            f"\"What survives which fault\")")


def cluster_id() -> str | None:
    """Hex id of the cluster this driver is connected to (Ray's private GCS client), or None."""
    import ray

    try:
        return ray._private.worker.global_worker.gcs_client.cluster_id.hex()
    except Exception:  # noqa: BLE001 - not connected, or no such attribute in this Ray
        return None


def gcs_cluster_id(address: str) -> str | None:
    """Hex id of the cluster whose GCS answers at ``address`` now (a fresh client), or None."""
    try:
        from ray._raylet import GcsClient

        return GcsClient(address=address, cluster_id=None).cluster_id.hex()
    except Exception:  # noqa: BLE001 - it does not answer after all, or no such call in this Ray
        return None


def head_back_note(address: str, down_s: float) -> str:
    """The driver's line when the head's GCS at ``address`` answers again after ``down_s`` seconds."""
    return f"the Ray head's GCS at {address} answers again after {down_s:.0f} s"


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
