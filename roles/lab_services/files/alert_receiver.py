#!/usr/bin/env python3
"""The lab's alert receiver (roles/lab_services, entry point alert_receiver), also used by the
monitoring role's molecule verify.

Stands in for the Slack-compatible webhook, the generic webhook and the SMTP server (no
real ones can run here). HTTP POSTs on 127.0.0.1:HTTP_PORT (default 9199) and mails on
127.0.0.1:SMTP_PORT (default 2525) are appended to the log file, one JSON object a line:
{"channel": "http", "path": ..., "body": ...} or {"channel": "smtp", "from": ..., "to": [...], "data": ...}.
"""

import json
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# alert_receiver.py LOG [HTTP_PORT [SMTP_PORT]]
LOG = sys.argv[1]
HTTP_PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 9199
SMTP_PORT = int(sys.argv[3]) if len(sys.argv) > 3 else 2525
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
    smtp = SmtpServer(("127.0.0.1", SMTP_PORT), Smtp)
    threading.Thread(target=smtp.serve_forever, daemon=True).start()
    ThreadingHTTPServer(("127.0.0.1", HTTP_PORT), Webhook).serve_forever()
