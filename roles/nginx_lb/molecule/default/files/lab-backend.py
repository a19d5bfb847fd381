#!/usr/bin/env python3
"""Stand-in app host for the nginx_lb scenario: answers every request with JSON saying
which instance (port) served it, the path, the method and the X-Request-ID it received."""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == "/readyz":
            body = {"status": "ready"}
        elif self.path.startswith("/api/products"):
            body = {"products": [{"id": "prod_lab", "name": "Lab product"}]}
        elif self.path.startswith("/big"):
            body = {"padding": "x" * 4096}
        else:
            body = {}
        body.update(
            backend=PORT,
            path=self.path,
            method=self.command,
            request_id=self.headers.get("X-Request-ID", ""),
        )
        data = json.dumps(body).encode()
        self.send_response(200)
        content_type = "text/css" if self.path.startswith("/static/") else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
