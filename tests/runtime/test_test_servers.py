"""Port helpers of masterx_runtime/testing/servers.py (the fixtures' and fault tests' servers)."""

from __future__ import annotations

import socket
from pathlib import Path

from masterx_runtime.testing import servers


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = servers.free_ports(6)
    assert len(set(ports)) == 6
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", ports[0]))
        b.bind(("127.0.0.1", ports[-1]))


def test_reserved_port_is_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    port = servers.reserved_port()
    assert 20000 <= port < low
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free when handed out
        taken = s.getsockname()[1]
        # with the port taken, another call gives another one
        assert servers.reserved_port() != taken
