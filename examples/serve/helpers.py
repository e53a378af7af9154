"""Two small servers for the serve example, on 127.0.0.1 only.

  helpers.py git PORT ROOT     git's smart HTTP protocol for the bare
                               repositories under ROOT (git http-backend)
  helpers.py forge PORT LOG    a forge API that accepts every commit status
                               and appends it to LOG as one JSON line
"""
import http.server
import json
import os
import subprocess
import sys


class Git(http.server.BaseHTTPRequestHandler):
    def handle_one(self, method):
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = dict(os.environ,
                   GIT_PROJECT_ROOT=ROOT, GIT_HTTP_EXPORT_ALL="1",
                   REQUEST_METHOD=method, PATH_INFO=path, QUERY_STRING=query,
                   CONTENT_TYPE=self.headers.get("Content-Type", ""),
                   CONTENT_LENGTH=str(length))
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             capture_output=True, check=False).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        self.handle_one("GET")

    def do_POST(self):
        self.handle_one("POST")

    def log_message(self, *args):
        pass


class Forge(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        status = json.loads(self.rfile.read(length) or b"{}")
        status["path"] = self.path
        with open(LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(status) + "\n")
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "git":
        ROOT = sys.argv[3]
        handler = Git
    else:
        LOG = sys.argv[3]
        handler = Forge
    http.server.ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()
