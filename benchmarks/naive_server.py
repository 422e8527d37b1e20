"""The naive peer for the serving benchmark: one `transformers` pipeline call per request, no batching.

It owns what "naive" means in `benchmarks/results/serve.json`: the standard library's
`ThreadingHTTPServer` (a thread per connection, like Flask's dev server or a sync FastAPI route)
in front of one shared `pipeline("text-classification")` on the same model folder the service
serves, with torch's intra-op threads set to the number of cores. Concurrent requests run their
pipeline calls concurrently, each on its own, as such a server does; `--serialize` instead puts
the calls behind one lock, the other obvious way to write it, so the benchmark can report against
both (the headline `speedup_vs_naive_c32` is against the first, the issue's peer). It speaks the
service's protocol — `POST /predict {"texts": [...]}`, `GET /readyz` — so one load generator
drives both.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from contextlib import nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(classify, lock):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the load generator's connection pool expects

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply(200, {"ok": True}) if self.path in ("/readyz", "/livez") else self._reply(404, {})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.path != "/predict":
                return self._reply(404, {"error": "not found"})
            try:
                texts = json.loads(body)["texts"]
                with lock:
                    outputs = classify(texts)
            except Exception as err:  # a naive server, but it still answers instead of dropping the line
                return self._reply(500, {"error": f"{type(err).__name__}: {err}"})
            predictions = [{"label": max(out, key=lambda s: s["score"])["label"],
                            "scores": {s["label"]: s["score"] for s in out}} for out in outputs]
            self._reply(200, {"predictions": predictions})

        def log_message(self, *args) -> None:  # one line per request would cost as much as the work
            pass

    return Handler


class Server(ThreadingHTTPServer):
    # The default listen backlog of 5 overflows when 32 clients connect at once, and the kernel's
    # SYN-cookie retries then add a second to some requests: that would be unfair to the peer.
    request_queue_size = 256
    daemon_threads = True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder (transformers files)")
    parser.add_argument("--port", type=int, default=3001)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch intra-op threads")
    parser.add_argument("--max-length", type=int, default=128, help="truncate longer statements (the service's)")
    parser.add_argument("--serialize", action="store_true", help="one pipeline call at a time, behind a lock")
    args = parser.parse_args(argv)

    import torch
    from transformers import pipeline

    torch.set_num_threads(args.threads)
    pipe = pipeline("text-classification", model=args.model, tokenizer=args.model, device="cpu", top_k=None)

    def classify(texts: list[str]) -> list[list[dict]]:
        return pipe(texts, truncation=True, max_length=args.max_length)

    lock = threading.Lock() if args.serialize else nullcontext()
    server = Server((args.host, args.port), make_handler(classify, lock))
    print(f"naive pipeline server on http://{args.host}:{args.port} (threads={args.threads}, "
          f"serialize={args.serialize})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
