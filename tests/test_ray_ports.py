"""A node's port block: what is free is what Ray could bind."""

import socket

from ray_workflow.ray_ports import ports_in_use


def unheld_pair() -> int:
    """A port nothing holds, with the next one free too: on a busy machine other clusters hold ports anywhere."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 1 < 65536 and not {port, port + 1} & set(ports_in_use(port)):
            return port


def test_a_port_left_in_time_wait_is_free_and_one_a_program_holds_is_not():
    """After a cluster stops, its ports linger in TIME_WAIT for a minute; Ray binds them anyway (SO_REUSEADDR), so
    relaunching on the same ports at once must not be refused."""
    base = unheld_pair()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", base))
    server.listen()
    client = socket.create_connection(("127.0.0.1", base))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end of the connection waits in TIME_WAIT
    server.close()
    client.close()
    with socket.socket() as plain:
        try:
            plain.bind(("0.0.0.0", base))
            lingering = False
        except OSError:
            lingering = True
    assert lingering, "the port is in TIME_WAIT (a plain bind fails)"
    assert base not in ports_in_use(base)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + 1))
        holder.listen()
        assert base + 1 in ports_in_use(base)
