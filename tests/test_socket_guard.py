import socket

import pytest



def test_non_loopback_connection_fails_loudly():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(RuntimeError, match="only 127.0.0.1 is allowed"):
            s.connect(("203.0.113.10", 443))
    finally:
        s.close()


def test_loopback_connection_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.socket()
    try:
        client.connect(server.getsockname())
        conn, _ = server.accept()
        conn.close()
    finally:
        client.close()
        server.close()
