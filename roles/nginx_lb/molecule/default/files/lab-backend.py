#!/usr/bin/env python3
"""Stand-in app host for the nginx_lb scenario: answers every request with JSON saying
which instance (port) served it, the path, the method and the X-Request-ID it received, and
appends the same to REQUEST_LOG, so verify can tell which requests reached an app host."""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
REQUEST_LOG = "/var/log/lab-backend-requests.log"
_log_lock = threading.Lock()


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
        with _log_lock, open(REQUEST_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps({key: body[key] for key in ("backend", "path", "method", "request_id")}) + "\n")
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
