"""``ray_cluster.NodeWatch`` on real sockets: a refused raylet port is a lost node at once, one
that stops answering is lost after ``lost_after`` and not before, one that answers never is."""

from __future__ import annotations

import socket
import time

from parainfer.executors.ray_cluster import NodeWatch, probe_raylet


def listening() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # bound, never listened: connections to it are refused
    return port


def silent() -> tuple[socket.socket, list[socket.socket]]:
    """A port whose accept queue is full (backlog 0, never accepted): the kernel drops new
    connection attempts, so they time out, as for a machine off the network."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(s.getsockname())
        fillers.append(c)
    time.sleep(0.2)
    return s, fillers


def wait_lost(watch: NodeWatch, seconds: float) -> tuple[dict[str, str], float]:
    t0, found = time.monotonic(), {}
    while time.monotonic() - t0 < seconds and not found:
        found = watch.take_lost()
        time.sleep(0.05)
    return found, time.monotonic() - t0


def test_refused_raylet_is_lost_at_once_and_an_answering_one_never() -> None:
    alive, port = listening(), closed_port()
    watch = NodeWatch(lambda: {"127.0.0.1": port}, period=0.2, connect_s=0.5, lost_after=30.0)
    watch.start()
    try:
        found, after = wait_lost(watch, 5.0)
        assert found == {"127.0.0.1": f"its raylet (port {port}) refuses connections"} and after < 2.0
        assert watch.take_lost() == {}  # each lost node is handed over once
    finally:
        watch.stop()
    ok = NodeWatch(lambda: {"127.0.0.1": alive.getsockname()[1]}, period=0.1, connect_s=0.5, lost_after=0.3)
    ok.start()
    try:
        assert wait_lost(ok, 1.5)[0] == {}
    finally:
        ok.stop()
        alive.close()
    assert probe_raylet("127.0.0.1", port) == "refused"
    assert ok.verdict("127.0.0.1", port) == f"its raylet (port {port}) refuses connections"
    assert ok.verdict("127.0.0.1", None) is None


def test_a_node_that_stops_answering_is_lost_after_lost_after() -> None:
    server, fillers = silent()
    port = server.getsockname()[1]
    assert probe_raylet("127.0.0.1", port, timeout=0.3) == "timed out"
    watch = NodeWatch(lambda: {"127.0.0.1": port}, period=0.1, connect_s=0.3, lost_after=2.0)
    watch.start()
    try:
        found, after = wait_lost(watch, 10.0)
        assert 1.5 <= after < 5.0, after
        assert found["127.0.0.1"].startswith(f"its raylet (port {port}) has not answered for ")
        assert found["127.0.0.1"].endswith("s (timed out)")
    finally:
        watch.stop()
        for c in fillers:
            c.close()
        server.close()
