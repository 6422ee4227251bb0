"""A minimal OpenAI-compatible completions server (stdlib only) for the process-lifecycle tests of
the generic server mode: it streams exactly max_tokens events of one token each, reports usage in
every event, and with --die-after K exits abruptly while serving its K-th completion, as a crashed
engine would. It does no inference: it exists to test how llem-bench starts, drives and stops a
server process, never to produce a benchmark number."""

import argparse
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--die-after", type=int, default=0)
parser.add_argument("--token-s", type=float, default=0.002)
args = parser.parse_args()
served = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _json(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            self._json({})
        elif self.path == "/v1/models":
            self._json({"data": [{"id": "tiny"}]})
        else:
            self.send_error(404)

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_POST(self):
        global served
        if self.path != "/v1/completions":  # e.g. vLLM's /reset_prefix_cache: not here, like most servers
            self.send_error(404)
            return
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        served += 1
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(1, request["max_tokens"] + 1):
            if args.die_after and served >= args.die_after and i > 2:
                print("tiny server: dying on purpose", flush=True)
                os._exit(3)
            time.sleep(args.token_s)
            self._chunk("data: " + json.dumps({"choices": [{"text": "x"}], "usage": {"completion_tokens": i}}) + "\n\n")
        self._chunk("data: [DONE]\n\n")
        self._chunk("")


print(f"tiny server on {args.port}", file=sys.stderr, flush=True)
ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
