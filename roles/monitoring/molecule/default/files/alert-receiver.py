#!/usr/bin/env python3
"""Test-only alert receiver for the monitoring role's molecule verify.

Stands in for the Slack-compatible webhook, the generic webhook and the SMTP server (no
real ones can run here). HTTP POSTs on 127.0.0.1:9199 and mails on 127.0.0.1:2525 are
appended to the log file given as the only argument, one JSON object a line:
{"channel": "http", "path": ..., "body": ...} or {"channel": "smtp", "from": ..., "to": [...], "data": ...}.
"""

import json
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = sys.argv[1]
lock = threading.Lock()


def record(entry):
    with lock, open(LOG, "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


class Webhook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode("utf-8", "replace")
        record({"channel": "http", "path": self.path, "body": body})
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class Smtp(socketserver.StreamRequestHandler):
    """Just enough SMTP for Alertmanager without TLS or authentication."""

    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        self.reply("220 molecule ESMTP")
        sender, recipients = None, []
        while line := self.rfile.readline():
            command = line.decode("utf-8", "replace").strip()
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.reply("250-molecule")
                self.reply("250 8BITMIME")
            elif verb == "HELO":
                self.reply("250 molecule")
            elif verb == "MAIL":
                sender = command.split(":", 1)[1].strip()
                self.reply("250 OK")
            elif verb == "RCPT":
                recipients.append(command.split(":", 1)[1].strip())
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with .")
                data = []
                while (part := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                    data.append(part.decode("utf-8", "replace"))
                record({"channel": "smtp", "from": sender, "to": recipients, "data": "".join(data)})
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 OK")


class SmtpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    smtp = SmtpServer(("127.0.0.1", 2525), Smtp)
    threading.Thread(target=smtp.serve_forever, daemon=True).start()
    ThreadingHTTPServer(("127.0.0.1", 9199), Webhook).serve_forever()
