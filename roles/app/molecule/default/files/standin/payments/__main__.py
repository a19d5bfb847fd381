"""STAND-IN for the payment app (app role molecule scenario only, not the real app).

`serve` answers /livez, /readyz and /api/health on HOST:PORT; `migrate` only reports that it
ran. /api/health tells which required settings reached the container, never their values.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REQUIRED = ("DATABASE_URL", "REDIS_URL", "STRIPE_SECRET_KEY", "SESSION_SECRET")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path in ("/livez", "/readyz"):
            self.reply(200, {"status": "ok"})
        elif self.path == "/api/health":
            self.reply(200, {
                "status": "ok",
                "version": os.environ.get("APP_VERSION"),
                "settings": {name: bool(os.environ.get(name)) for name in REQUIRED},
            })
        else:
            self.reply(404, {"error": {"code": "not_found", "message": self.path}})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main(argv):
    command = argv[1] if len(argv) > 1 else "serve"
    if command == "migrate":
        print("stand-in: migrations applied")
        return 0
    if command == "serve":
        ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
    print(f"stand-in: unknown command {command}", file=sys.stderr)
    return 2


sys.exit(main(sys.argv))
