"""The command-line options ``pipeline.evaluate`` and ``jobs/annotate.py`` share, and their
checks: every option is validated here, before Ray starts, and a bad one names the
option and what it allows (argparse's exit code 2).

    add_pruning_options(parser)            --method --pruning-rate --num-retain --layer --stages --positions --param
    add_resource_options(parser, ...)      --actors --num-gpus --batch-size --frames --max-pixels
                                           --dtype --sample-timeout
    pruning_config(args), check(args)      the PruningConfig asked for; ValueError if any option is off
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from pruning import PruningConfig

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
DATA_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".json")


def add_pruning_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="none", help="pruning method (vlm_pruner, fastv, ...) or 'none' "
                                                         "(default: unpruned)")
    parser.add_argument("--pruning-rate", type=float, help="share of visual tokens removed, in [0, 1)")
    parser.add_argument("--num-retain", type=int, help="visual tokens kept per span (instead of a rate)")
    parser.add_argument("--layer", type=int, help="decoder layer to prune before (method default if unset)")
    parser.add_argument("--stages", metavar="LAYERS", help="progressive pruning: layers '2,6,12' (the rate split "
                                                         "evenly over the stages) or 'layer:rate' pairs '2:0.5,6:0.889'")
    parser.add_argument("--positions", choices=("original", "renumbered"),
                        help="position ids of the kept tokens (default original)")
    parser.add_argument("--param", action="append", metavar="NAME=VALUE",
                        help="a method parameter, e.g. --param token_batch=8 (repeatable)")


def add_resource_options(parser: argparse.ArgumentParser, *, batch_size: int, frames: int) -> None:
    parser.add_argument("--actors", type=int, default=1, help="model replicas (actors) in the infer pool "
                                                              "(default 1)")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor (default 0: CPU)")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"samples per model batch "
                                                                           f"(default {batch_size})")
    parser.add_argument("--frames", type=int, default=frames, help=f"frames sampled per video (default {frames})")
    parser.add_argument("--max-pixels", type=int, help="resize video frames to at most this many pixels")
    parser.add_argument("--dtype", help="model dtype, e.g. bfloat16 (default: the checkpoint's)")
    parser.add_argument("--sample-timeout", type=float, default=600.0, metavar="SECONDS",
                        help="reading or decoding one sample longer than this kills its worker; after 3 tries the "
                             "sample is an error row (default 600; 0: no deadline)")


def pruning_config(args: argparse.Namespace) -> PruningConfig:
    """The PruningConfig the pruning options ask for (ValueError naming the field)."""
    values = {"method": args.method}
    if args.pruning_rate is not None and args.method != "none":
        values["pruning_rate"] = args.pruning_rate
    if args.num_retain is not None:
        values["num_retain"] = args.num_retain
    if args.layer is not None:
        values["layer"] = args.layer
    for name in ("stages", "positions"):
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    for item in args.param or []:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--param: expected NAME=VALUE (e.g. token_batch=8), got {item!r}")
        try:  # numbers and booleans as JSON; anything else as the string it is
            values[name.strip()] = json.loads(text)
        except ValueError:
            values[name.strip()] = text
    return PruningConfig.from_dict(values)


def check(args: argparse.Namespace) -> None:
    """Every resource option in its range (ValueError naming the option)."""
    at_least = {"actors": 1, "batch_size": 1, "frames": 1, "max_pixels": 1, "limit": 1, "max_new_tokens": 1,
                "chunk_size": 1}
    for name, low in at_least.items():
        value = getattr(args, name, None)
        if value is not None and value < low:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {value}")
    for name in ("num_gpus", "sample_timeout"):
        value = getattr(args, name, None)
        if value is not None and not value >= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a number >= 0, got {value}")
    if getattr(args, "dtype", None) is not None:
        from pipeline.models import _resolve_dtype

        try:
            _resolve_dtype(args.dtype)
        except ValueError as exc:
            raise ValueError(f"--dtype: {exc}") from None


def data_problem(data: str) -> str | None:
    """Why ``data`` is neither a benchmark file, a folder holding data files, nor a hub id."""
    path = Path(data).expanduser()
    if path.is_file():
        return None if path.suffix in DATA_SUFFIXES else f"{data} is no {', '.join(DATA_SUFFIXES)} file"
    if path.is_dir():
        if any(p.suffix in DATA_SUFFIXES for p in path.rglob("*") if p.is_file()):
            return None
        return f"{data} holds no {', '.join(DATA_SUFFIXES)} files"
    return None if _HUB_ID.fullmatch(data) else f"{data!r} is no file or folder, and no hub id (owner/name)"


def check_data(data: str) -> None:
    """``--data`` is a benchmark file, a folder holding its data files, or a hub id."""
    problem = data_problem(data)
    if problem:
        raise ValueError(f"--data: {problem}")
