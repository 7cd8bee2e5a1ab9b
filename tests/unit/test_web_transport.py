"""The shared HTTP transport's socket options (shared.web.server)."""
import socket

from shared.web import server


def test_accepted_connections_send_at_once_without_waiting_for_the_client_s_ack():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
                server._no_delay(accepted)
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            client.close()
            server._no_delay(accepted)  # closed meanwhile: nothing to do, no error
    left, right = socket.socketpair()
    with left, right:
        server._no_delay(left)  # not TCP: nothing to do, no error
