"""Small pieces shared by the Python benchmark scripts under benches/."""

import http.server
import socket
import threading


def free_port():
    """A loopback port free at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def origin(name):
    """A threaded HTTP/1.1 origin on a free loopback port that answers every
    GET with its `name` (body and `X-Backend`); returns the port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 65536  # one write per response (no Nagle / delayed-ACK stall)

        def do_GET(self):
            body = name.encode()
            self.send_response(200)
            self.send_header("X-Backend", name)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]
