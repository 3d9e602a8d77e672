"""A tiny model server for the demo and the tests: the shape of a real one, without the weights' maths.

It serves GET /healthz (200 once the weights are loaded), GET /detectors (the detectors it answers, from
DETECTORS_CONFIG) and POST /infer (a fake answer: the golden-set gate's
cases in golden.jsonl POST there).  SIGHUP re-reads the detectors.  Usage:
    python3 serve.py --port 8101
"""

import argparse
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODEL_DIR = Path(os.environ.get("MODEL_DIR", "."))
STATE = {"detectors": [], "reloads": 0}


def load_detectors(*_: object) -> None:
    path = os.environ.get("DETECTORS_CONFIG")
    mine = []
    if path and Path(path).exists():
        text = Path(path).read_text()
        # the file is YAML; the standard library has no YAML parser, so take the ids line by line
        current = {}
        for line in text.splitlines():
            line = line.strip().lstrip("- ")
            if ":" in line:
                key, _, value = line.partition(":")
                current[key.strip()] = value.strip().strip("'\"")
                if key.strip() == "confidence_threshold":
                    if current.get("model") == os.environ.get("MODEL_NAME"):
                        mine.append(current.get("detector_id"))
                    current = {}
    STATE["detectors"] = mine
    STATE["reloads"] += 1


def answer_label() -> str:
    """What this "model" answers: weights that start with ``label:`` say which label (so a bad version is a
    bad artifact, as in life), anything else answers "person"."""
    weights = MODEL_DIR / "weights.bin"
    head = weights.read_bytes()[:64] if weights.exists() else b""
    return head[6:].split(b"\n")[0].decode(errors="replace").strip() if head.startswith(b"label:") else "person"


class Handler(BaseHTTPRequestHandler):
    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            weights = MODEL_DIR / "weights.bin"
            if not weights.exists() and (MODEL_DIR / "serve.py").exists():
                self._send(503, {"error": "weights.bin missing"})
                return
            self._send(200, {"model": os.environ.get("MODEL_NAME"), "version": os.environ.get("MODEL_VERSION")})
        elif self.path == "/detectors":
            self._send(200, {"detectors": STATE["detectors"], "reloads": STATE["reloads"], "pid": os.getpid()})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path == "/infer":
            length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
            self.rfile.read(length)
            self._send(200, {"label": answer_label(), "confidence": 0.93, "model": os.environ.get("MODEL_NAME")})
        else:
            self._send(404, {"error": "not found"})

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if os.environ.get("FAIL_HEALTH") == "1":
        sys.exit(3)
    load_detectors()
    signal.signal(signal.SIGHUP, load_detectors)
    print(f"serving {os.environ.get('MODEL_NAME')} {os.environ.get('MODEL_VERSION')} on 127.0.0.1:{args.port}",
          flush=True)
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
