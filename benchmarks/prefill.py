"""Measured prefill speed-up of visual token pruning on a mid-size Qwen2-VL, next to the FLOPs prediction.

The model is a randomly initialised Qwen2VLForConditionalGeneration: the tiny qwen2_vl
family's config (token ids, M-RoPE, vision geometry) and processor (tokenizer, chat
template) from pipeline.tiny, with the LLM scaled up to --hidden x --layers (GQA,
SwiGLU MLP ~2.7x wide) and a small vision tower (pruning does not change the tower;
its share of the time is printed). One chat prompt with one synthetic image of about
--visual-tokens visual tokens goes through the real Qwen2-VL processor, its pixel
budget raised so that the image is not scaled down.

One prefill is ``model(**inputs, use_cache=True, logits_to_keep=1)`` under
torch.no_grad, as generate's first step runs it. Each row: --warmup untimed prefills,
then the median of --repeats timed ones. Rows: the bare model (no hooks), then each
method at each rate through ``pruning.apply(model, PruningConfig(method, pruning_rate))``
at the method's default layer K (2 for vlm_pruner, fastv, dart; 0, on the visual
embeddings, for divprune, random, uniform).

Columns:
  kept       visual tokens kept / before pruning (handle.stats.visual_tokens())
  ms         median prefill milliseconds
  speed-up   unpruned ms / ms
  predicted  pruning.flops.prefill_flops(...)["speedup"] for the same sequence length,
             visual token counts, layer K and vision patches (vision tower included)
  meas/pred  speed-up / predicted (target: >= 85% at 88.9%)
  select     the spans' select_seconds (median) / prefill time (target: < 5%). It covers
             the method's select call only, not the engine's recomputation of layer
             K-1's rotary keys (and FastV's attention row); on CUDA the engine
             synchronises around it, so queued kernels are counted.
  cpu        CPU time of this process / (wall time x threads) over the timed prefills:
             well below the unpruned row's share means other load on the machine. There,
             use --threads 1 --clock cpu: a prefill's CPU time on one thread is its
             idle-machine latency on one core, whoever else takes turns on the cores.

    python benchmarks/prefill.py                      # default size: ~10 min on 2 CPU cores
    python benchmarks/prefill.py --quick              # tiny model, 1 repeat: a smoke run
    python benchmarks/prefill.py --threads 1 --clock cpu   # on a machine shared with other jobs
    python benchmarks/prefill.py --hidden 1024 --layers 16 --visual-tokens 2500 --methods vlm_pruner fastv
    python benchmarks/prefill.py --device cuda --dtype bfloat16 --hidden 3584 --layers 28
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, Qwen2VLConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pruning  # noqa: E402
from pipeline.models import tiny_checkpoint  # noqa: E402
from pruning.flops import prefill_flops  # noqa: E402

METHODS = ("vlm_pruner", "fastv", "dart", "divprune", "random", "uniform")
RATES = (66.7, 77.8, 88.9)  # percent: 192, 128, 64 of LLaVA's 576 tokens
TARGET_RATIO, TARGET_SELECT = 0.85, 0.05
# Sizes left unset on the command line come from here (--quick: the second column).
SIZES = {  # name: (default, quick)
    "hidden": (1536, 256),
    "layers": (12, 4),
    "kv_heads": (2, 2),
    "vision_width": (128, 64),
    "vision_depth": (2, 1),
    "visual_tokens": (1500, 64),
    "repeats": (3, 1),
}
PIXELS_PER_TOKEN = 28  # Qwen2-VL: 14-pixel patches, 2 x 2 merged into one LLM token


def build(args) -> tuple[torch.nn.Module, object]:
    """The scaled-up random Qwen2-VL (eval mode, on --device in --dtype) and the tiny processor."""
    path = tiny_checkpoint("qwen2_vl")
    values = AutoConfig.from_pretrained(path).to_dict()
    text = values["text_config"]
    text.pop("layer_types")  # one entry per layer: rebuilt for the new depth
    head_dim = args.hidden // args.heads
    text.update(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                num_key_value_heads=args.kv_heads, intermediate_size=args.mlp,
                rope_parameters={**text["rope_parameters"], "mrope_section": mrope_section(head_dim)})
    values["vision_config"].update(embed_dim=args.vision_width, depth=args.vision_depth,
                                   num_heads=max(1, args.vision_width // 64),
                                   hidden_size=args.hidden)  # the merger's output width
    torch.manual_seed(args.seed)
    model = AutoModelForImageTextToText.from_config(Qwen2VLConfig.from_dict(values), dtype=args.dtype,
                                                    attn_implementation="sdpa")
    return model.to(args.device).eval(), AutoProcessor.from_pretrained(path)


def mrope_section(head_dim: int) -> list[int]:
    """Qwen2-VL splits the head_dim / 2 rotary frequencies 16:24:24 over (t, h, w); 128 -> [16, 24, 24]."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def synthetic_image(tokens: int, seed: int) -> Image.Image:
    """A 4:3 RGB image of about ``tokens`` Qwen2-VL tokens: smooth colour fields plus fine noise."""
    cols = max(2, round(math.sqrt(tokens * 4 / 3)))
    rows = max(2, round(tokens / cols))
    size = (cols * PIXELS_PER_TOKEN, rows * PIXELS_PER_TOKEN)
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (rows // 2 + 1, cols // 2 + 1, 3), dtype=np.uint8))
    pixels = np.asarray(coarse.resize(size, Image.BICUBIC), dtype=np.int16)
    pixels = pixels + rng.integers(-12, 13, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def prompt_inputs(processor, image: Image.Image, args) -> dict:
    """Processor outputs for one user turn (the image, then a question), on --device."""
    messages = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": "Describe this image in detail."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    budget = image.width * image.height  # pixels: the processor keeps the image as it is
    inputs = processor(text=[text], images=[image], return_tensors="pt",
                       size={"shortest_edge": 56 * 56, "longest_edge": budget})
    return {k: v.to(args.device, dtype=args.dtype if v.is_floating_point() else v.dtype)
            for k, v in inputs.items()}


@dataclass
class Timing:
    """--repeats timed calls of one function."""

    seconds: float  # median, on --clock
    walls: list[float]  # wall seconds of each call
    results: list  # what each call returned
    cpu_share: float  # process CPU time / (wall time x threads): below ~95% means other load


def timed(fn, args) -> Timing:
    """``fn()`` called --warmup times untimed, then --repeats times timed."""
    walls, cpus, results = [], [], []
    for i in range(args.warmup + args.repeats):
        _sync(args.device)
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        _sync(args.device)
        if i >= args.warmup:
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            results.append(result)
    # One thread on an idle machine: CPU time = wall time, and it does not grow when other
    # processes take turns on the cores (wall time does).
    clock = cpus if args.clock == "cpu" else walls
    share = sum(cpus) / (sum(walls) * torch.get_num_threads())
    return Timing(statistics.median(clock), walls, results, share)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prefill(model, inputs) -> None:
    with torch.no_grad():
        model(**inputs, use_cache=True, logits_to_keep=1)


def encode_image(model, inputs) -> None:
    """The vision tower and merger alone, as the prefill runs them."""
    with torch.no_grad():
        model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])


def pruned_row(model, inputs, config: pruning.PruningConfig, unpruned_s: float, args) -> dict:
    """Time ``config`` on the model; the row's numbers, with the FLOPs prediction."""
    with pruning.apply(model, config) as handle:
        def run():
            prefill(model, inputs)
            return handle.stats
        timing = timed(run, args)
    stats = timing.results
    # Both from the same calls' wall clocks (the engine times select with perf_counter).
    select = statistics.median(sum(span.select_seconds for spans in s.samples for span in spans) / wall
                               for s, wall in zip(stats, timing.walls))
    (before,), (after,) = stats[-1].visual_tokens()
    flops = prefill_flops(model.config, seq_len=stats[-1].seq_len, visual_tokens=before,
                          kept_visual_tokens=after, layer=config.layer,
                          num_patches=int(inputs["image_grid_thw"].prod(dim=-1).sum()))
    measured = unpruned_s / timing.seconds
    return dict(method=config.method, rate=f"{100 * config.pruning_rate:.1f}%", kept=f"{after}/{before}",
                ms=timing.seconds * 1e3, speedup=measured, predicted=flops["speedup"],
                ratio=measured / flops["speedup"], select=select, cpu=timing.cpu_share,
                pct=100 * config.pruning_rate)


ROW = ("{method:<10} {rate:>6} {kept:>10} {ms:>9.0f} {speedup:>8.2f}x {predicted:>9.2f}x {ratio:>9.0%} "
       "{select:>7.2%} {cpu:>5.0%}")
HEAD = (f"{'method':<10} {'rate':>6} {'kept':>10} {'ms':>9} {'speed-up':>9} {'predicted':>10} "
        f"{'meas/pred':>9} {'select':>7} {'cpu':>5}")


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and input size options (benchmarks/shared.py builds the same model)."""
    size = parser.add_argument_group("model and input size (defaults / with --quick)")
    size.add_argument("--hidden", type=int, help="LLM hidden size (1536 / 256)")
    size.add_argument("--layers", type=int, help="LLM decoder layers (12 / 4); K = 2 needs >= 3")
    size.add_argument("--heads", type=int, help="LLM query heads (hidden / 128: head_dim 128 / hidden / 64)")
    size.add_argument("--kv-heads", type=int, help="LLM key-value heads, GQA (2 / 2)")
    size.add_argument("--mlp", type=int, help="LLM MLP width (default: 2.7 x hidden, rounded to 128)")
    size.add_argument("--vision-width", type=int, help="vision tower width, 64 per head (128 / 64)")
    size.add_argument("--vision-depth", type=int, help="vision tower blocks (2 / 1)")
    size.add_argument("--visual-tokens", type=int,
                      help="approximate visual tokens of an image (1500 / 64); 4 vision patches each")


def resolve_sizes(args, parser: argparse.ArgumentParser) -> None:
    """Fill the sizes left unset from SIZES (--quick: the small ones) and check them."""
    for name, (default, quick) in SIZES.items():
        if getattr(args, name, None) is None:
            setattr(args, name, quick if args.quick else default)
    args.heads = args.heads or max(1, args.hidden // (64 if args.quick else 128))
    args.mlp = args.mlp or 128 * max(1, round(2.7 * args.hidden / 128))
    if args.hidden % args.heads or args.heads % args.kv_heads or (args.hidden // args.heads) % 8:
        parser.error("need hidden divisible by heads, heads by kv-heads, and head_dim divisible by 8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_arguments(parser)
    run = parser.add_argument_group("what to run")
    run.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="METHOD",
                     help=f"any of {', '.join(METHODS)} (default: all)")
    run.add_argument("--rates", nargs="+", type=float, default=list(RATES),
                     help="pruning rates in percent (default: 66.7 77.8 88.9)")
    run.add_argument("--repeats", type=int, help="timed prefills per row, median reported (3 / 1)")
    run.add_argument("--warmup", type=int, default=1,
                     help="untimed prefills before each row's repeats (default: 1)")
    run.add_argument("--threads", type=int,
                     help="CPU threads of torch and of numpy's BLAS (default: their own choice, the cores)")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                     help="torch device (default: cuda when available, else cpu); CUDA is synced around "
                          "each timed call")
    run.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                     help="model dtype: float32 (default), bfloat16, float16; bfloat16 is very slow on "
                          "CPUs without native bf16 matmul")
    run.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                     help="what a prefill's time is: wall (default; latency on an idle machine) or cpu "
                          "(this process's CPU time: with --threads 1 it equals the wall time on an idle "
                          "machine and does not grow when other jobs share the cores; CPU devices only)")
    run.add_argument("--seed", type=int, default=0, help="seed of the weights and the image")
    run.add_argument("--quick", action="store_true", help="tiny sizes and 1 repeat: a smoke run of seconds")
    args = parser.parse_args(argv)
    resolve_sizes(args, parser)
    if not all(0 < r < 100 for r in args.rates):
        parser.error("--rates are percentages in (0, 100)")
    args.dtype = getattr(torch, args.dtype)
    args.device = torch.device(args.device)
    if args.clock == "cpu" and args.device.type != "cpu":
        parser.error("--clock cpu measures CPU time: use it with --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
        limit_numpy_threads(args.threads)

    began = time.perf_counter()
    model, processor = build(args)
    inputs = prompt_inputs(processor, synthetic_image(args.visual_tokens, args.seed), args)
    patches = int(inputs["image_grid_thw"].prod(dim=-1).sum())
    tokens = patches // model.config.vision_config.spatial_merge_size ** 2
    describe(model, inputs, tokens, args)

    unpruned = timed(lambda: prefill(model, inputs), args)
    vision = timed(lambda: encode_image(model, inputs), args)
    flops = prefill_flops(model.config, seq_len=inputs["input_ids"].shape[1], visual_tokens=tokens,
                          kept_visual_tokens=tokens, layer=0, num_patches=patches)
    print(f"vision tower: {vision.seconds * 1e3:.0f} ms = {vision.seconds / unpruned.seconds:.1%} of the "
          f"unpruned prefill ({flops['vision'] / flops['total_unpruned']:.1%} of its FLOPs, "
          f"{flops['total_unpruned'] / 1e12:.2f} TFLOPs in all)\n")
    print(HEAD)
    print(ROW.format(method="unpruned", rate="-", kept=f"{tokens}/{tokens}", ms=unpruned.seconds * 1e3,
                     speedup=1.0, predicted=1.0, ratio=1.0, select=0.0, cpu=unpruned.cpu_share), flush=True)
    rows = []
    for method in args.methods:
        for rate in args.rates:
            config = pruning.PruningConfig(method=method, pruning_rate=rate / 100)
            rows.append(pruned_row(model, inputs, config, unpruned.seconds, args))
            print(ROW.format(**rows[-1]), flush=True)

    again = timed(lambda: prefill(model, inputs), args)
    print(f"\nunpruned again at the end: {again.seconds * 1e3:.0f} ms "
          f"({again.seconds / unpruned.seconds - 1:+.1%}, cpu {again.cpu_share:.0%}): drift over the run")
    summarize(rows, args)
    print(f"total {time.perf_counter() - began:.0f} s")


def limit_numpy_threads(threads: int) -> None:
    """Cap numpy's BLAS pool too (vlm_pruner's CPU loop runs on numpy). It is sized to the
    machine, not to torch's threads; when the cores are busy its idle workers spin and a
    16 x 256 x 1485 product can take 16 ms instead of 0.2 ms (the selection holds it to one
    thread itself; this covers the rest of the process)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads, user_api="blas")


def describe(model, inputs, tokens: int, args) -> None:
    """Print the setting: versions, clock, model size, prompt."""
    threads = f" ({torch.get_num_threads()} threads)" if args.device.type == "cpu" else ""
    print(f"torch {torch.__version__}, {args.device}{threads}, {args.dtype}; {args.clock} clock, median of "
          f"{args.repeats} prefill(s) after {args.warmup} warm-up per row")
    params = sum(p.numel() for p in model.model.language_model.parameters())
    print(f"LLM: hidden {args.hidden}, {args.layers} layers, {args.heads} heads / {args.kv_heads} KV heads, "
          f"MLP {args.mlp}, {params / 1e6:.0f}M parameters; vision: width {args.vision_width}, "
          f"{args.vision_depth} blocks")
    grid = tuple(inputs["image_grid_thw"][0].tolist())
    print(f"prompt: {inputs['input_ids'].shape[1]} tokens, {tokens} visual (one image, patch grid {grid})",
          flush=True)


def summarize(rows: list[dict], args) -> None:
    """Print whether the targets are met."""
    top = [r for r in rows if r["pct"] == max(args.rates)]
    if top:
        worst = min(top, key=lambda r: r["ratio"])
        print(f"at {worst['rate']}: lowest meas/pred {worst['ratio']:.0%} ({worst['method']}; target >= "
              f"{TARGET_RATIO:.0%}): {'met' if worst['ratio'] >= TARGET_RATIO else 'MISSED'}")
    if rows:
        slowest = max(rows, key=lambda r: r["select"])
        print(f"largest selection share {slowest['select']:.2%} ({slowest['method']} at {slowest['rate']}; "
              f"target < {TARGET_SELECT:.0%}): {'met' if slowest['select'] < TARGET_SELECT else 'MISSED'}")


if __name__ == "__main__":
    main()
