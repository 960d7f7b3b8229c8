"""Samples per second through the Ray pipeline vs a plain Python loop, same model and samples.

    python benchmarks/pipeline.py [--task pope] [--samples 192] [--model tiny:qwen2_vl]

Runs, in one process and on the same generated sample set: (1) a plain loop that
decodes each sample (images, video frames) and answers in batches (processor and
model, one batch after the other), (2) the Ray pipeline with one actor on a fresh
cluster ("cold": its CPU stage's workers start during the job), (3) the same job again
("warm", several times, each job between two loop runs), (4) with two actors.
Steady-state throughput is compared: the loop is timed after its model is loaded and
warmed up, and the pipeline from the first model batch's start to the last one's end
(the ``infer_started`` / ``infer_finished`` columns), so actor start-up and model
loading, a fixed cost per job, are left out of both; the whole job's rate (with them)
is printed beside it. The pipeline with one warm actor should reach >= 90% of the
loop's throughput.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pipeline import evaluate, video  # noqa: E402
from pipeline.infer import Generator, Request, decode_image  # noqa: E402
from pipeline.samples import main as write_samples  # noqa: E402
from pipeline.sources import task_source  # noqa: E402
from pipeline.tasks import get_task  # noqa: E402
from pruning import PruningConfig  # noqa: E402


def plain_loop(generator, task_name, samples, config, batch_size, frames) -> tuple[float, float]:
    """(samples per second, seconds in ``generate``) of a warmed-up ``generator``
    answering ``samples`` in batches."""
    task = get_task(task_name)
    start = time.perf_counter()
    scores, generate = [], 0.0
    for lo in range(0, len(samples), batch_size):
        batch = [s for s in samples[lo:lo + batch_size] if not s.error]
        requests = [Request(s.prompt, images=[decode_image(b) for b in s.images],
                            frames=video.read_frames(s.video, frames) if s.video else None,
                            max_new_tokens=s.max_new_tokens, until=s.until) for s in batch]
        if requests:
            answers = generator.run(requests, config)
            generate += answers[0].generate_s
            for s, a in zip(batch, answers):
                scores.append(task.score(task.parse(a.text, s), s))
    return len(samples) / (time.perf_counter() - start), generate


def pipeline_run(source, samples, model, config, resources) -> tuple[float, float, str]:
    """(steady-state samples/s, whole-job samples/s, where the model stage's time went), of
    a job into a fresh results store (nothing stored is reused)."""
    with tempfile.TemporaryDirectory() as out:
        ((result,),) = evaluate.evaluate([source], model, [config], out, resources).values()
        rows = result.rows()
    calls = sorted({(r["infer_started"], r["infer_finished"]) for r in rows})
    busy = max(end for _, end in calls) - min(begin for begin, _ in calls)
    inside = sum(end - begin for begin, end in calls)
    generate = sum(r["generate_s"] / r["batch_size"] for r in rows if r.get("generate_s"))
    gaps = sorted((b[0] - a[1]) * 1e3 for a, b in zip(calls, calls[1:]) if b[0] >= a[1])
    gap_note = f"; gaps between calls: median {statistics.median(gaps):.0f} ms, max {gaps[-1]:.0f} ms" if gaps else ""
    note = (f"{len(calls)} model calls; busy window {busy:.2f} s (summed over actors: "
            f"{busy * resources.actors:.2f} s), inside the calls {inside:.2f} s, in generate {generate:.2f} s"
            f"{gap_note}")
    return len(samples) / busy, len(samples) / result.seconds, note


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="pope", help="benchmark whose sample layout is generated")
    parser.add_argument("--samples", type=int, default=192, help="samples in the set (default 192)")
    parser.add_argument("--model", default="tiny:qwen2_vl")
    parser.add_argument("--method", default="vlm_pruner")
    parser.add_argument("--pruning-rate", type=float, default=0.778)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5,
                        help="warm 1-actor jobs (default 5), each between two loop runs: its ratio "
                             "to their mean is printed and the median of the ratios is the result")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the loop and for each actor (default 1: on a busy "
                             "2-core machine more threads spin and slow everything down)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    torch.set_num_threads(args.threads)
    config = PruningConfig(method=args.method, pruning_rate=args.pruning_rate)
    cores = os.cpu_count() or 1
    resources = {actors: evaluate.Resources(actors=actors, batch_size=args.batch_size, frames=args.frames,
                                            threads=args.threads) for actors in (1, 2)}

    with tempfile.TemporaryDirectory() as root:
        write_samples(["--out", root, "--tasks", args.task, "--per-task", str(args.samples)])
        samples = evaluate.read_samples(args.task, str(Path(root) / args.task))  # for the loop
        source = task_source(args.task, str(Path(root) / args.task))
        generator = Generator(args.model)
        generator.warm_up()  # as the actors do

        loop_notes = []

        def loop() -> float:
            rate, generate = plain_loop(generator, args.task, samples, config, args.batch_size, args.frames)
            name = f"plain loop #{len(loop_notes)}" if loop_notes else "plain loop"
            loop_notes.append(f"{name}: {len(samples) / rate:.2f} s, in generate {generate:.2f} s")
            return rate

        first_loop = loop()
        evaluate.init_ray()
        # The first job on a fresh cluster also starts the CPU stage's worker processes
        # (each imports torch and transformers and loads the processor once: seconds on
        # this machine), and its model stage waits on them; later jobs find them running.
        # "cold" is what a short job sees, "warm" the steady state a long job settles
        # into, comparable with the warmed-up loop. The machine's speed drifts by 10-30%
        # within minutes, so each warm job is compared with the loop runs right before
        # and right after it.
        cold = pipeline_run(source, samples, args.model, config, resources[1])
        rows = [("plain loop", first_loop, None, None), ("ray, 1 actor, cold", cold[0], cold[1], first_loop)]
        notes = [f"ray, 1 actor, cold: {cold[2]}"]
        ratios = []
        before = loop()
        rows.append(("plain loop #1", before, None, None))
        for repeat in range(args.repeats):
            warm = pipeline_run(source, samples, args.model, config, resources[1])
            after = loop()
            base = (before + after) / 2  # the loop runs just before and just after the job
            ratios.append(warm[0] / base)
            rows += [(f"ray, 1 actor, warm #{repeat + 1}", warm[0], warm[1], base),
                     (f"plain loop #{repeat + 2}", after, None, None)]
            notes.append(f"ray, 1 actor, warm #{repeat + 1}: {warm[2]}")
            before = after
        two = pipeline_run(source, samples, args.model, config, resources[2])
        rows.append(("ray, 2 actors, warm", two[0], two[1], base))
        notes.append(f"ray, 2 actors, warm: {two[2]}")

    print(f"\n{args.task}: {len(samples)} samples, {args.model}, {args.method} {args.pruning_rate:.1%}, "
          f"batch {args.batch_size}, {cores} CPU cores, {args.threads} torch thread(s) per model, "
          f"torch {torch.__version__}")
    print(f"{'run':<24} {'samples/s':>10} {'vs loop':>8} {'whole job, samples/s':>21}")
    for name, rate, whole, against in rows:
        ratio = f"{rate / against:.0%}" if against else ""
        print(f"{name:<24} {rate:>10.2f} {ratio:>8} {'' if whole is None else f'{whole:.2f}':>21}")
    print("\n".join(loop_notes + notes))
    print(f"1 warm actor vs the mean of the loop runs just before and after it: median {statistics.median(ratios):.0%} "
          f"over {len(ratios)} pairs ({', '.join(f'{r:.0%}' for r in ratios)})")


if __name__ == "__main__":
    main()
