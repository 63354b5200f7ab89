#!/usr/bin/env python3
"""Fetch one HTTPS URL through a proxy the way Launchpad's builder-side forwarder does:
a new connection, a CONNECT that says `Connection: close`, then TLS and one GET.

usage: launchpad_connect.py PROXY_PORT ID TOKEN CA_FILE HOST PORT PATH
Prints the HTTP status line of the response and writes the body to stdout after it.
"""
import base64
import socket
import ssl
import sys

proxy_port, sid, token, ca, host, port, path = sys.argv[1:8]
creds = base64.b64encode(f"{sid}:{token}".encode()).decode()
sock = socket.create_connection(("127.0.0.1", int(proxy_port)), timeout=20)
sock.sendall(
    f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    f"Proxy-Authorization: Basic {creds}\r\nConnection: close\r\n\r\n".encode()
)
head = b""
while b"\r\n\r\n" not in head:
    data = sock.recv(1)
    if not data:
        sys.exit("proxy closed the connection after CONNECT")
    head += data
status = head.split(b"\r\n", 1)[0].decode()
if " 200 " not in status + " ":
    print(status)
    sys.exit(1)
ctx = ssl.create_default_context(cafile=ca)
tls = ctx.wrap_socket(sock, server_hostname=host)
tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
response = b""
while True:
    data = tls.recv(65536)
    if not data:
        break
    response += data
head, _, body = response.partition(b"\r\n\r\n")
print(head.split(b"\r\n", 1)[0].decode())
sys.stdout.flush()
sys.stdout.buffer.write(body)
