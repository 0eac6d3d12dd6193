"""The example API: a few products over HTTP, with a health check. Standard library only."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PRODUCTS = [
    {"id": 1, "name": "kettle", "price": 24},
    {"id": 2, "name": "teapot", "price": 31},
]


def route(path):
    """Return (status, body) for a GET of `path`."""
    if path == "/health":
        return 200, {"ok": True, "target": os.environ.get("ENVCTL_TARGET", "main")}
    if path == "/products":
        return 200, PRODUCTS
    return 404, {"error": f"no route {path}"}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the stdlib's name)
        status, body = route(self.path)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        print(f"{self.address_string()} {fmt % args}", flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8400"))
    print(f"api listening on 127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
