#!/usr/bin/python3
"""A tiny HTTP/1.1 keep-alive backend for the haproxy scenario: it answers its name.

    testbackend NAME ADDRESS PORT

GET /healthz answers "ok", any other path NAME; both 200. It stands for a fleet
host's service: each one listens on its own loopback address, like hosts on their IPs.
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer (headers and body, flushed by the server after each
    # request) and no Nagle delay: keep-alive requests do not wait 40 ms each.
    wbufsize = -1
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        body = b"ok\n" if self.path == "/healthz" else f"{NAME}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


NAME, ADDRESS, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer((ADDRESS, PORT), Handler).serve_forever()
