#!/usr/bin/env python3
"""A local origin server for fetchgate's integration tests (HTTP, or HTTPS with --cert).

Serves files from --dir, plus:
  /status/<code>          an empty response with that status
  /redirect?to=<path>     302 to <path>
  /slow/<bytes>?ms=<n>    <bytes> of deterministic data in 64 KiB chunks, n ms apart
  /echo-auth              the Authorization header it received, as the body
  /reset/<bytes>?after=<n>  headers for <bytes> of /slow's data, the first n bytes, then
                          a TCP reset (SO_LINGER 0; over TLS, no close_notify)
  /git/<repo>/...         git smart HTTP, served by `git http-backend` from --git-root
  /<path>?go-get=1        <path>/go-get.html as text/html (the go command's discovery)
  Range: bytes=N-         206 with the rest of a file
Prints "ready <port>" once listening.
"""
import argparse
import http.server
import os
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.parse


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("origin: " + (fmt % args) + "\n")

    def git_backend(self, url):
        """Runs git http-backend as a CGI for /git/... requests."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "GIT_PROJECT_ROOT": self.server.git_root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": url.path[len("/git"):],
            "QUERY_STRING": url.query,
            "CONTENT_TYPE": self.headers.get("Content-Type") or "",
            "CONTENT_LENGTH": str(length),
            "REMOTE_ADDR": self.client_address[0],
            "GIT_PROTOCOL": self.headers.get("Git-Protocol") or "",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        out = subprocess.run([self.server.git_backend], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.split(b"\r\n"):
            name, _, value = line.decode().partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith("/git/"):
            self.git_backend(url)
        else:
            self.send_error(405)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith("/git/"):
            return self.git_backend(url)
        if url.query == "go-get=1":
            return self.go_get(url.path)
        parts = url.path.strip("/").split("/")
        query = urllib.parse.parse_qs(url.query)
        if parts[0] == "status" and len(parts) == 2:
            self.send_response(int(parts[1]))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts[0] == "echo-auth":
            body = (self.headers.get("Authorization") or "none").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif parts[0] == "redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts[0] == "slow" and len(parts) == 2:
            total = int(parts[1])
            delay = int(query.get("ms", ["50"])[0]) / 1000
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total))
            self.end_headers()
            sent = 0
            while sent < total:
                n = min(65536, total - sent)
                self.wfile.write(bytes((sent + i) % 251 for i in range(n)))
                self.wfile.flush()
                sent += n
                time.sleep(delay)
        elif parts[0] == "reset" and len(parts) == 2:
            total = int(parts[1])
            after = int(query.get("after", [str(total // 2)])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total))
            self.end_headers()
            self.wfile.write(bytes(i % 251 for i in range(after)))
            self.wfile.flush()
            # Let the proxy forward what was sent before the reset discards it.
            time.sleep(0.2)
            # Closed with linger 0: a reset, no FIN; a TLS socket closed without
            # unwrap() sends no close_notify either. (The real close happens once the
            # handler's rfile lets go, before socketserver's shutdown(SHUT_WR) could
            # send a FIN; that call then fails quietly.)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif self.headers.get("Range", "").startswith("bytes=") and os.path.isfile(self.translate_path(url.path)):
            self.send_range(self.translate_path(url.path))
        else:
            super().do_GET()

    def go_get(self, path):
        page = os.path.join(os.getcwd(), path.strip("/"), "go-get.html")
        if not os.path.isfile(page):
            return self.send_error(404)
        with open(page, "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_range(self, path):
        """206 for `Range: bytes=N-` (the form apt sends to resume a download)."""
        with open(path, "rb") as f:
            data = f.read()
        start = int(self.headers["Range"][len("bytes="):].split("-")[0] or 0)
        part = data[start:]
        self.send_response(206)
        self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        self.wfile.write(part)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--git-root", default="/nonexistent")
    ap.add_argument("--git-backend", default="/usr/lib/git-core/git-http-backend")
    ap.add_argument("--bind", default="127.0.0.1", help="loopback address to listen on")
    ap.add_argument("--port", type=int, default=0, help="port (0: any free one)")
    args = ap.parse_args()
    os.chdir(args.dir)
    server = http.server.ThreadingHTTPServer((args.bind, args.port), Handler)
    server.git_root = args.git_root
    server.git_backend = args.git_backend
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("ready", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
