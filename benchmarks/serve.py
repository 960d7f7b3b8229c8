"""Serving load: latency percentiles and throughput of the chat server, with and without pruning.

Starts a local Ray cluster and the ``pipeline.serve`` app on a free loopback port
(or uses ``--url`` of a running one), then, for each pruning config in turn, sends
``--requests`` chat completions from ``--concurrency`` client threads (urllib, HTTP to
127.0.0.1), each one image of ``--image-size`` pixels square and ``max_tokens``
``--max-tokens``; the config rides in each request's ``pruning`` field, so one loaded
model serves every row. A row stops issuing requests after ``--duration-s``.

Columns:
  ok         requests answered 200 / sent
  p50 p90 p99  latency in ms, client side (send to full answer)
  req/s      answered requests / wall time of the row
  tokens     mean visual tokens after / before pruning (from the answers' ``pruning``)
  prefill    mean prefill ms of the batches the requests ran in
  batch      mean requests per model batch

    python benchmarks/serve.py                                   # tiny:qwen2_vl, ~1 min on 2 CPU cores
    python benchmarks/serve.py --requests 400 --concurrency 64 --configs none vlm_pruner:0.889 fastv:0.75
    python benchmarks/serve.py --url http://127.0.0.1:8000       # a deployment already running
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import socket
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def image_data_url(size: int) -> str:
    from pipeline.samples import shape_image

    buffer = BytesIO()
    shape_image("red", "circle", size=size).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def parse_config(text: str) -> dict:
    """``none`` -> {"method": "none"}; ``vlm_pruner:0.889`` -> method and pruning_rate."""
    method, _, rate = text.partition(":")
    return {"method": method, **({"pruning_rate": float(rate)} if rate else {})}


def post(url: str, body: dict, timeout: float) -> tuple[int, dict, float]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url + "/v1/chat/completions", data=data,
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, answer = response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        status, answer = error.code, {}
    except OSError:
        status, answer = 0, {}
    return status, answer, time.perf_counter() - start


def load(url: str, body: dict, requests: int, concurrency: int, duration_s: float) -> dict:
    """Send ``requests`` copies of ``body`` from ``concurrency`` threads; stop issuing after
    ``duration_s``. Returns the row's numbers."""
    results, lock, issued = [], threading.Lock(), [0]
    deadline = time.perf_counter() + duration_s

    def worker():
        while True:
            with lock:
                if issued[0] >= requests or time.perf_counter() > deadline:
                    return
                issued[0] += 1
            result = post(url, body, timeout=max(deadline - time.perf_counter(), 0) + 60)
            with lock:
                results.append(result)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    wall = time.perf_counter() - start
    ok = [(answer, seconds) for status, answer, seconds in results if status == 200]
    latencies = sorted(seconds * 1000 for _, seconds in ok)

    def pct(q):  # nearest rank
        return latencies[max(math.ceil(q * len(latencies)) - 1, 0)] if latencies else float("nan")

    def mean(key):
        values = [answer["pruning"][key] for answer, _ in ok]
        return statistics.fmean(values) if values else float("nan")

    return {"sent": len(results), "ok": len(ok), "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99),
            "requests_per_s": len(ok) / wall, "wall_s": wall,
            "visual_tokens_before": mean("visual_tokens_before"), "visual_tokens_after": mean("visual_tokens_after"),
            "prefill_ms": mean("prefill_s") * 1000, "batch_size": mean("batch_size")}


HEADER = ("| config | ok | p50 ms | p90 ms | p99 ms | req/s | tokens after/before | prefill ms | batch |\n"
          "|---|---|---|---|---|---|---|---|---|")


def format_row(row: dict) -> str:
    return (f"| {row['config']} | {row['ok']}/{row['sent']} | {row['p50_ms']:.0f} | {row['p90_ms']:.0f} | "
            f"{row['p99_ms']:.0f} | {row['requests_per_s']:.1f} | {row['visual_tokens_after']:.0f}/"
            f"{row['visual_tokens_before']:.0f} | {row['prefill_ms']:.1f} | {row['batch_size']:.1f} |")


def start_local(args) -> str:
    import ray
    from ray import serve

    from pipeline.serve import build

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build({"model": args.model, "max_batch_size": args.max_batch_size,
                     "batch_wait_timeout_s": args.batch_wait_timeout_s,
                     "max_ongoing_requests": max(args.concurrency, args.max_batch_size),
                     "num_cpus": args.num_cpus, "num_gpus": args.num_gpus}), name="bench", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny:qwen2_vl", help="model of the local deployment")
    parser.add_argument("--url", help="a running deployment (default: start one locally)")
    parser.add_argument("--configs", nargs="+", default=["none", "vlm_pruner:0.889"],
                        help="pruning configs, METHOD[:RATE] (default: none vlm_pruner:0.889)")
    parser.add_argument("--requests", type=int, default=200, help="requests per config (default 200)")
    parser.add_argument("--concurrency", type=int, default=32, help="client threads (default 32)")
    parser.add_argument("--duration-s", type=float, default=120, help="stop issuing after this (default 120)")
    parser.add_argument("--max-tokens", type=int, default=8, help="max_tokens per request (default 8)")
    parser.add_argument("--image-size", type=int, default=448, help="square image side in pixels (default 448)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="the deployment's max_batch_size")
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.02, help="the deployment's batch wait")
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPUs of the replica (its torch threads)")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPUs of the replica (default 0: CPU)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if min(args.requests, args.concurrency) < 1 or args.requests > 10_000 or args.concurrency > 512:
        parser.error("--requests must be in [1, 10000] and --concurrency in [1, 512]")

    url = args.url or start_local(args)
    image = image_data_url(args.image_size)
    rows = []
    print(HEADER, flush=True)
    try:
        for text in args.configs:
            body = {"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": image}},
                {"type": "text", "text": "Describe the picture."}]}],
                "max_tokens": args.max_tokens, "pruning": parse_config(text)}
            load(url, body, requests=min(8, args.requests), concurrency=min(8, args.concurrency), duration_s=30)
            row = {"config": text, **load(url, body, args.requests, args.concurrency, args.duration_s)}
            rows.append(row)
            print(format_row(row), flush=True)
    finally:
        if not args.url:
            import ray
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
