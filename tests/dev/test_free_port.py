"""free_port: a port a child can bind a moment later, outside the range the kernel hands out
for outgoing connections' source ports (where `bind(0)` ports came from, and collided)."""

from __future__ import annotations

import socket
from pathlib import Path

from tokenlimit.dev.process import PORT_LOW, free_port


def test_free_ports_are_bindable_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(50)}
    assert len(ports) > 40  # chosen at random, not one port again and again
    for port in ports:
        assert PORT_LOW <= port < low
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", next(iter(ports))))


def test_a_port_a_listener_holds_is_never_handed_out() -> None:
    listeners = []
    try:
        for _ in range(20):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", free_port()))
            sock.listen()
            listeners.append(sock)
        held = {sock.getsockname()[1] for sock in listeners}
        assert all(free_port() not in held for _ in range(200))
    finally:
        for sock in listeners:
            sock.close()
