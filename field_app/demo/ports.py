"""Free ports on 127.0.0.1 for the servers the demo, the benchmarks and the tests start.

A port taken with ``bind(("127.0.0.1", 0))`` and closed again comes from the kernel's ephemeral
range, which every outgoing connection draws from too: between that probe and the server's own
bind, a client can take it (even a client polling the server's own address, connected to
itself), and the server cannot start. These ports come from below that range instead, where the
kernel hands nothing out on its own.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST_PORT = 10_000
LINUX_FIRST_EPHEMERAL = 32_768


def _first_ephemeral_port() -> int:
    try:
        low = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
    except (OSError, IndexError):
        return LINUX_FIRST_EPHEMERAL
    return max(int(low), LOWEST_PORT + 1_000)


def listening_socket() -> socket.socket:
    """A TCP socket bound to a free port on 127.0.0.1, below the ephemeral range: hand it to a
    server in this process, which then listens on it, or close it."""
    top = _first_ephemeral_port()
    for _ in range(200):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", random.randrange(LOWEST_PORT, top)))  # noqa: S311 - not a secret
        except OSError:
            sock.close()
            continue
        return sock
    raise OSError(f"no free port on 127.0.0.1 between {LOWEST_PORT} and {top}")


def free_port() -> int:
    """A port nothing listens on now, for a server started in another process."""
    with listening_socket() as sock:
        return int(sock.getsockname()[1])
