"""Sends exactly N GET requests, one after another, on one keep-alive
connection, and checks each answer is a 200 with the expected body length.
Deterministic input for callgrind: the same bytes in the same order each run.

Usage: python3 fixed_client.py PORT N [HOST_HEADER] [EXTRA_HEADER: value]...
"""

import socket
import sys


def read_response(sock, buf):
    """Reads one response from sock; returns (status, body, leftover)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise RuntimeError("response without content-length")
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed in the body")
        rest += chunk
    return status, rest[:length], rest[length:]


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    host = sys.argv[3] if len(sys.argv) > 3 else "localhost"
    extra = "".join(f"{h}\r\n" for h in sys.argv[4:])
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fixed-client\r\n{extra}\r\n".encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    for i in range(n):
        sock.sendall(request)
        status, _body, buf = read_response(sock, buf)
        if status != 200:
            raise SystemExit(f"request {i}: status {status}")
    sock.close()
    print(f"{n} requests ok")


if __name__ == "__main__":
    main()
