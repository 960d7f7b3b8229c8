"""A sweep's grid points sharing their common work, against each point run alone.

    python benchmarks/shared.py                       # mid-size model: ~5 min on 2 CPU cores
    python benchmarks/shared.py --quick               # tiny sizes: a smoke run of seconds
    python benchmarks/shared.py --device cuda --dtype bfloat16 --hidden 3584 --layers 28

The model is benchmarks/prefill.py's randomly initialised mid-size Qwen2-VL (same
sizes and flags). ``--requests`` chat prompts, each with its own synthetic image of
about ``--visual-tokens`` visual tokens, form one batch, answered greedily
(``--new-tokens``, default 2: the short answers most benchmarks score) under the
19-point grid of the demo: the unpruned baseline plus
vlm_pruner, fastv, dart (layer 2), divprune, random, uniform (layer 0) at 66.7, 77.8 and
88.9%. Both runs go through ``pipeline.infer.Generator.run_prepared``, as the sweep's
infer stage does, side by side in one process:

    alone    each point's generate on its own (what a sweep did before)
    shared   the same calls inside ``Generator.shared(grid)``: the vision encoder once,
             the decoder layers below each point's first pruning layer once for every
             point that prunes there or deeper (pipeline/prefix.py)

The vision tower's share of the time decides much of the saving: real VLMs' towers are
about a quarter of an unpruned prefill (Qwen2-VL-7B: a 32-block, 1280-wide ViT on four
patches per LLM token), prefill.py's default one (128 x 2) about 5%; ``--vision-width``
and ``--vision-depth`` set it, and its share is printed.

Printed: wall seconds of each run and shared / alone (target <= 0.70), whether every
point's answers and kept tokens are identical, each point's reported prefill in both
runs (the shared run reports each point's time as if alone: the recorded seconds are
counted in) with its shared seconds, and the peak memory of each run (CUDA peak
allocated, or the process's peak RSS on CPU, which only grows: there the shared run
comes second and its growth is what the record adds).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import prefill  # noqa: E402
from pipeline.infer import Generator, Request  # noqa: E402
from pruning import PruningConfig  # noqa: E402

METHODS = ("vlm_pruner", "fastv", "dart", "divprune", "random", "uniform")
RATES = (0.667, 0.778, 0.889)
TARGET = 0.70


def grid() -> list[PruningConfig]:
    return [PruningConfig.none()] + [PruningConfig(m, pruning_rate=r) for m in METHODS for r in RATES]


def run(generator, prepared, configs, shared: bool, device) -> tuple[float, list, float]:
    """(wall seconds, answers per config, peak memory MB) of answering every config."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    if shared:
        generator.prefix.reset_peak()
        with generator.shared(configs):
            answers = [generator.run_prepared(prepared, c) for c in configs]
    else:
        answers = [generator.run_prepared(prepared, c) for c in configs]
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return seconds, answers, peak


def label(config: PruningConfig) -> str:
    return "unpruned" if config.pruning_rate is None else f"{config.method} {config.pruning_rate:.1%}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    prefill.add_size_arguments(parser)
    parser.add_argument("--requests", type=int, default=2, help="prompts in the batch, each with its own image")
    parser.add_argument("--new-tokens", type=int, default=2,
                        help="greedy tokens per answer (default 2: a yes/no, letter or one-word answer, what "
                             "most scored benchmarks ask for; the random model never stops by itself)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args(argv)
    prefill.resolve_sizes(args, parser)
    args.dtype, args.device = getattr(torch, args.dtype), torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, processor = prefill.build(args)
    generator = Generator.from_model(model, processor, device=str(args.device))
    generator.preparer.processor.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": 10 ** 8}  # as is
    images = [prefill.synthetic_image(args.visual_tokens, args.seed + i) for i in range(args.requests)]
    prepared = [generator.preparer.prepare(Request("Describe the picture in detail.", images=[image],
                                                   max_new_tokens=args.new_tokens)) for image in images]
    if args.dtype != torch.float32:
        for p in prepared:
            p.inputs = {k: (v.astype("float32") if v.dtype.kind == "f" else v) for k, v in p.inputs.items()}
    configs = grid()
    tokens = sum(a.visual_tokens_before for a in generator.run_prepared(prepared, configs[0]))  # warm-up
    print(f"torch {torch.__version__}, {args.device} ({torch.get_num_threads()} threads), {args.dtype}; "
          f"LLM hidden {args.hidden} x {args.layers} layers, vision {args.vision_width} x {args.vision_depth}; "
          f"{args.requests} requests, {tokens} visual tokens in all, {args.new_tokens} new tokens; "
          f"{len(configs)} grid points", flush=True)

    alone_s, alone, alone_peak = run(generator, prepared, configs, False, args.device)
    shared_s, shared, shared_peak = run(generator, prepared, configs, True, args.device)

    print(f"\n{'point':<20} {'same':>5} {'prefill ms alone':>17} {'prefill ms shared':>18} {'shared ms':>10}")
    identical = True
    for config, a, b in zip(configs, alone, shared):
        same = [(x.text, x.kept) == (y.text, y.kept) for x, y in zip(a, b)]
        identical &= all(same)
        print(f"{label(config):<20} {str(all(same)):>5} {a[0].prefill_s * 1e3:>17.0f} {b[0].prefill_s * 1e3:>18.0f} "
              f"{b[0].shared_s * 1e3:>10.0f}")
    ratio = shared_s / alone_s
    vision = next(b[0].shared_s for c, b in zip(configs, shared) if c.method == "divprune")  # K = 0: the encoder
    print(f"\nvision encoder {vision * 1e3:.0f} ms a batch = {vision / alone[0][0].ttft_s:.0%} of the unpruned "
          f"point's TTFT alone ({alone[0][0].ttft_s * 1e3:.0f} ms); layers 0-1 "
          f"{(shared[1][0].shared_s - vision) * 1e3:.0f} ms")
    print(f"\nalone  {alone_s:7.1f} s   peak memory {alone_peak:7.0f} MB")
    print(f"shared {shared_s:7.1f} s   peak memory {shared_peak:7.0f} MB; the batch's record held at most "
          f"{generator.prefix.peak_bytes / 2**20:.0f} MB (freed when its points are done)")
    print(f"shared / alone: {ratio:.2f}x (target <= {TARGET:.2f}: {'met' if ratio <= TARGET else 'MISSED'}); "
          f"identical answers and kept tokens at every point: {identical}")


if __name__ == "__main__":
    main()
