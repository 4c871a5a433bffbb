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


def test_head_gcs_going_quiet_and_coming_back_gives_one_line_each() -> None:
    head = listening()
    port = head.getsockname()[1]
    watch = NodeWatch(dict, period=0.05, connect_s=0.5, head=f"127.0.0.1:{port}")
    watch.start()
    try:
        time.sleep(0.3)
        assert watch.take_notes() == []  # it answers
        head.close()  # the GCS killed: its port refuses
        time.sleep(0.3)
        notes = watch.take_notes()
        assert len(notes) == 1 and notes[0].startswith(f"the Ray head's GCS at 127.0.0.1:{port} does not answer "
                                                       f"(connection refused): "), notes
        assert "rerun the same command" in notes[0]
        time.sleep(0.3)
        assert watch.take_notes() == []  # said once
        again = socket.socket()
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen(16)
        time.sleep(0.3)
        assert [n.rpartition(" after ")[0] for n in watch.take_notes()] == [
            f"the Ray head's GCS at 127.0.0.1:{port} answers again"]
        again.close()
    finally:
        watch.stop()


def test_no_head_watched_for_a_local_ray_or_a_ray_url() -> None:
    assert NodeWatch(dict).head is None and NodeWatch(dict, head="ray://10.0.0.1:10001").head is None
    assert NodeWatch(dict, head="auto").head is None and NodeWatch(dict, head="10.0.0.1:6379").head == ("10.0.0.1", 6379)
