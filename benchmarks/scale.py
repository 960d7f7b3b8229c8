"""Driver memory and throughput as the data grows, and what a killed run loses.

    python benchmarks/scale.py [--sizes 1000 10000 50000] [--baseline-checkout DIR] [--kill]

For each size, a POPE-layout set of N generated questions (noise JPEGs of --image-size
pixels, ~12 KB each at 112 px) is evaluated by ``python -m pipeline.evaluate`` with the
unpruned tiny Qwen2-VL answering one token per question (--max-new-tokens 1), each run
in a fresh process with its own local Ray; the driver's peak RSS (getrusage, the driver
process alone: Ray's workers are other processes) and the samples per second of the
whole run are printed. The model stage is cheap on purpose (16 visual tokens, one new
token, batches of 32), so reading and writing dominate; its share is printed from the
rows' own timings (generate_s).

--baseline-checkout DIR runs the same sets with the pipeline of another checkout of
this repository (``git worktree add DIR <commit>``, e.g. the commit before the
streaming pipeline, where the driver read every sample into a list and collected every
output row), side by side. --kill runs the largest set once more, SIGKILLs the driver's
process group (the driver and the Ray cluster it started, as a lost node) when about
half the rows are stored, reruns, and prints how many answers the rerun computed
against what was left, and whether the final rows equal the uninterrupted run's.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
MEASURE = ("import resource, runpy, sys; sys.argv = ['pipeline.evaluate'] + sys.argv[1:]; "
           "runpy.run_module('pipeline.evaluate', run_name='__main__'); "
           "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)")
SAME = ["id", "output", "parsed", "score", "error", "visual_tokens_before", "visual_tokens_after"]


def write_pope(path: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` POPE rows (question_id, question, answer, category, HF image) in row groups."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("question_id", pa.string()), ("question", pa.string()), ("answer", pa.string()),
                        ("category", pa.string()), ("image", image_type)],
                       metadata={b"huggingface": b'{"info": {"features": {"question_id": {"dtype": "string", '
                                                 b'"_type": "Value"}, "question": {"dtype": "string", "_type": '
                                                 b'"Value"}, "answer": {"dtype": "string", "_type": "Value"}, '
                                                 b'"category": {"dtype": "string", "_type": "Value"}, "image": '
                                                 b'{"_type": "Image"}}}}'})
    tiles = []
    for _ in range(64):  # 64 distinct pictures, reused: encoding is not what is measured
        buffer = BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
        tiles.append(buffer.getvalue())
    with pq.ParquetWriter(path / "test-00000-of-00001.parquet", schema) as writer:
        for lo in range(0, n, 1000):
            rows = [{"question_id": str(i), "question": f"Is there a {('cat', 'dog', 'car')[i % 3]} in the image?",
                     "answer": ("yes", "no")[i % 2], "category": ("random", "popular", "adversarial")[i % 3],
                     "image": {"bytes": tiles[i % len(tiles)], "path": None}} for i in range(lo, min(lo + 1000, n))]
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    return path


def command(checkout: Path, data: Path, out: Path, args) -> list[str]:
    extra = ["--max-new-tokens", "1"] if checkout == REPO else []  # older checkouts lack the option
    return [sys.executable, "-c", MEASURE, "--task", "pope", "--data", str(data), "--out", str(out),
            "--model", args.model, "--batch-size", str(args.batch_size), *extra]


def environment(checkout: Path) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(checkout)}
    env.pop("RAY_ADDRESS", None)
    return env


def run(checkout: Path, data: Path, out: Path, args) -> dict:
    start = time.perf_counter()
    done = subprocess.run(command(checkout, data, out, args), cwd=checkout, env=environment(checkout),
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{checkout}: exit {done.returncode}\n{done.stderr[-3000:]}")
    peak = int(re.search(r"PEAK_RSS_KB (\d+)", done.stdout).group(1)) / 1024
    rows = pq.read_table(out / "predictions.parquet", columns=["generate_s", "batch_size"]).to_pylist()
    model = sum(r["generate_s"] / r["batch_size"] for r in rows if r["generate_s"])
    return {"peak_mb": peak, "seconds": seconds, "rows": len(rows), "model_s": model, "log": done.stderr}


def stored_rows(out: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in (out / "rows").rglob("part-*.parquet"))


def kill_test(data: Path, n: int, reference: Path, scratch: Path, args) -> str:
    out = scratch / "killed"
    log = open(scratch / "killed.log", "w")
    victim = subprocess.Popen(command(REPO, data, out, args), cwd=REPO, env=environment(REPO), stdout=log,
                              stderr=log, start_new_session=True)
    while not (out / "rows").exists() or stored_rows(out) < n // 2:
        if victim.poll() is not None:
            raise RuntimeError("the run ended before half its rows were stored")
        time.sleep(0.5)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    log.close()
    kept = stored_rows(out)
    rerun = run(REPO, data, out, args)
    computed, stored = map(int, re.search(r"(\d+) \(row, point\) answers to compute, (\d+) stored",
                                          rerun["log"]).groups())
    same = (pq.read_table(out / "predictions.parquet", columns=SAME).to_pylist() ==
            pq.read_table(reference / "predictions.parquet", columns=SAME).to_pylist())
    return (f"kill at {kept} of {n} rows stored ({kept / n:.0%}); the rerun found {stored} stored and computed "
            f"{computed} ({computed / n:.0%} of the set; {computed - (n - kept)} answers redone); final rows equal "
            f"the uninterrupted run's: {same}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000, 50000])
    parser.add_argument("--image-size", type=int, default=112, help="picture side in pixels (default 112)")
    parser.add_argument("--model", default="tiny:qwen2_vl")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--baseline-checkout", type=Path, help="another checkout to run side by side")
    parser.add_argument("--kill", action="store_true", help="also the kill-and-resume test on the largest set")
    args = parser.parse_args(argv)
    designs = [("streaming (this checkout)", REPO)]
    if args.baseline_checkout:
        designs.append((f"baseline ({args.baseline_checkout})", args.baseline_checkout.resolve()))
    results, notes = [], []
    with tempfile.TemporaryDirectory(prefix="scale-") as scratch:
        scratch = Path(scratch)
        for n in args.sizes:
            data = write_pope(scratch / f"pope-{n}", n, args.image_size)
            images = sum(pq.read_metadata(p).num_rows for p in data.glob("*.parquet"))
            for name, checkout in designs:
                out = scratch / f"out-{n}-{len(results)}"
                result = run(checkout, data, out, args)
                results.append((n, name, result))
                print(f"{n:>7} {name:<28} driver peak {result['peak_mb']:8.0f} MB  {result['seconds']:7.1f} s  "
                      f"{result['rows'] / result['seconds']:6.1f} samples/s  (model {result['model_s']:.0f} s)",
                      flush=True)
            assert images == n
            if args.kill and n == max(args.sizes):
                notes.append(kill_test(data, n, scratch / f"out-{n}-{len(results) - len(designs)}", scratch, args))
    print(f"\nPOPE layout, {args.image_size} px noise JPEGs, {args.model} unpruned, 1 new token, batch "
          f"{args.batch_size}, {os.cpu_count()} CPU cores")
    print(f"{'samples':>8} {'design':<28} {'driver peak MB':>15} {'vs smallest':>12} {'samples/s':>10} "
          f"{'model share':>12}")
    for name, _ in designs:
        mine = [(n, r) for n, d, r in results if d == name]
        smallest = mine[0][1]["peak_mb"]
        for n, r in mine:
            print(f"{n:>8} {name:<28} {r['peak_mb']:>15.0f} {r['peak_mb'] / smallest:>11.0%} "
                  f"{r['rows'] / r['seconds']:>10.1f} {r['model_s'] / r['seconds']:>11.0%}")
    print("\n".join(notes))


if __name__ == "__main__":
    main()
