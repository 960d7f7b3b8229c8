"""Wall time of a sweep of M pruning configs in one Ray job vs M separate single-config runs.

    python benchmarks/sweep.py [--tasks pope egoschema] [--per-task 8] [--methods vlm_pruner fastv random]
                               [--rates 0.667 0.778 0.889] [--model tiny:qwen2_vl] [--frames 8]

Same generated sample sets (an image and a video benchmark), same model, the same M
configs (the unpruned baseline plus methods x rates, as jobs/sweep.py builds them), one
local Ray started before any timing:

    sweep      one pipeline.evaluate.evaluate call with all M configs: every task in one
               Ray Data job, each video decoded once, the model loaded once per actor
    separate   M evaluate calls with one config each: M actor pools, so M model loads and
               M decodes of every video

Both include everything from building the dataset to the last scored row (actor start,
model load, decode, inference, scoring); neither includes MLflow. The two must give
the same answers (checked) and the ratio is separate / sweep.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pipeline import evaluate  # noqa: E402
from pipeline.samples import write_task  # noqa: E402
from pipeline.sources import task_source  # noqa: E402
from pruning import PruningConfig  # noqa: E402


def timed(sources, model, configs, resources) -> tuple[float, dict]:
    """Seconds of one job into a fresh results store, and ``{task: [outputs per config]}``."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        results = evaluate.evaluate(sources, model, configs, out, resources)
        seconds = time.perf_counter() - start
        outputs = {task: [[r["output"] for r in result.rows()] for result in per_config]
                   for task, per_config in results.items()}
    return seconds, outputs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["pope", "egoschema"], help="sample sets to generate")
    parser.add_argument("--per-task", type=int, default=8, help="samples per task")
    parser.add_argument("--methods", nargs="+", default=["vlm_pruner", "fastv", "random"])
    parser.add_argument("--rates", nargs="+", type=float, default=[0.667, 0.778, 0.889])
    parser.add_argument("--model", default="tiny:qwen2_vl")
    parser.add_argument("--frames", type=int, default=8, help="frames per video")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args(argv)
    configs = [PruningConfig.none()] + [PruningConfig(method=m, pruning_rate=r) for m in args.methods
                                        for r in args.rates]
    resources = evaluate.Resources(actors=1, batch_size=args.batch_size, frames=args.frames)

    with tempfile.TemporaryDirectory() as root:
        sources = [task_source(task, str(write_task(task, root, args.per_task))) for task in args.tasks]
        evaluate.init_ray()  # Ray's own start-up is not timed
        sweep, together = timed(sources, args.model, configs, resources)
        separate, alone = 0.0, {task: [] for task in args.tasks}
        for config in configs:
            seconds, outputs = timed(sources, args.model, [config], resources)
            separate += seconds
            for task in args.tasks:
                alone[task] += outputs[task]
        rows = sum(source.count() for source in sources)
    same = together == alone
    print(f"\n{len(configs)} configs x {rows} samples ({', '.join(args.tasks)}; {args.frames} frames per video), "
          f"{args.model}, 1 actor, batch {args.batch_size}, {os.cpu_count()} CPU cores, torch {torch.__version__}")
    print(f"{'run':<34} {'wall s':>8}")
    print(f"{'sweep (1 job, M configs)':<34} {sweep:>8.1f}")
    print(f"{'separate (M jobs, 1 config each)':<34} {separate:>8.1f}")
    print(f"separate / sweep: {separate / sweep:.2f}x; same answers: {same}")


if __name__ == "__main__":
    main()
