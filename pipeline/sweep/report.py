"""A sweep's summary: the results table (csv, markdown), plots, and kept tokens drawn on samples.

Everything here reads :class:`PointSummary` records (a grid point's config and logged
metrics) or the pipeline's output rows, and writes files; the job logs them to MLflow.
Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from pruning import PruningConfig
from pruning.config import NO_PRUNING

SAMPLES_DRAWN = 3  # per task in the kept-token pictures
TILES_PER_SAMPLE = 4  # images, or time slices of a video, side by side


@dataclass
class PointSummary:
    """One grid point's results, fresh from this run or reused from an earlier one."""

    name: str
    key: str  # the point's sweep.point_key
    point: PruningConfig
    metrics: Mapping[str, float]
    run_id: str
    new: bool

    @property
    def series(self) -> str:
        """The point's name without its rate: one line in the plots."""
        p = self.point
        if p.method == NO_PRUNING:
            return NO_PRUNING
        return self.name.replace(f"{p.method}-{_amount(p)}", p.method, 1)  # see point_name


def _amount(point: PruningConfig) -> str:
    """The pruning amount in a run name: the rate ("0.889"), or "R64" for a token count."""
    return f"{point.pruning_rate:g}" if point.num_retain is None else f"R{point.num_retain}"


def point_name(point: PruningConfig, layers_vary: bool, varying: Sequence[str] = ()) -> str:
    """A short run name, e.g. ``vlm_pruner-0.889``, ``fastv-0.5-L3-token_batch=8``, ``none``,
    ``pyramiddrop-0.875-L8+16+24`` (progressive), ``divprune-0.889-renumbered``."""
    if point.method == NO_PRUNING:
        return NO_PRUNING
    parts = [point.method, _amount(point)]
    if point.stages:
        parts.append("L" + "+".join(str(layer) for layer in point.prune_layers))
    elif layers_vary or "layer" in varying:
        parts.append(f"L{point.layer}")
    if point.positions != "original":
        parts.append(point.positions)
    parts += [f"{name}={point.params[name]:g}" for name in varying if name in point.params]
    return "-".join(parts)


# ---------------------------------------------------------------- table


def table(points: Sequence[PointSummary], tasks: Sequence[str]) -> tuple[list[str], list[list]]:
    """(header, rows) of the summary, one row per point: raw values, None where missing."""
    header = (["point", "method", "pruning_rate", "layer"] + [f"{t}/score" for t in tasks] +
              ["avg_relative", "visual_tokens_before", "visual_tokens_after", "prefill_tflops", "flops_speedup",
               "prefill_speedup", "ttft_speedup", "prefill_s", "ttft_s", "decode_s_per_token",
               "samples_per_second", "peak_memory_mb", "errors", "run", "run_id"])
    rows = []
    for s in points:
        m = s.metrics
        rows.append([s.name, s.point.method, s.point.pruning_rate, s.point.layer] +
                    [m.get(key) for key in header[4:-2]] + ["new" if s.new else "reused", s.run_id])
    return header, rows


def write_csv(points: Sequence[PointSummary], tasks: Sequence[str], path: Path) -> Path:
    header, rows = table(points, tasks)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    return path


def markdown(points: Sequence[PointSummary], tasks: Sequence[str]) -> str:
    """The table for people: scores, Avg. %, tokens, speed-ups, times in ms."""
    head = (["point"] + list(tasks) + ["avg %", "tokens", "TFLOPs", "FLOPs x", "prefill x", "prefill ms",
                                        "TTFT ms", "decode ms/tok", "samples/s", "peak MB", "errors", "run"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in points:
        m = s.metrics
        cells = [s.name] + [_fmt(m.get(f"{t}/score"), ".1f") for t in tasks] + [
            _fmt(m.get("avg_relative"), ".1f"),
            f"{_fmt(m.get('visual_tokens_before'), '.0f')}->{_fmt(m.get('visual_tokens_after'), '.0f')}",
            _fmt(m.get("prefill_tflops"), ".4g"), _fmt(m.get("flops_speedup"), ".2f"),
            _fmt(m.get("prefill_speedup"), ".2f"), _fmt(_ms(m.get("prefill_s")), ".1f"),
            _fmt(_ms(m.get("ttft_s")), ".1f"), _fmt(_ms(m.get("decode_s_per_token")), ".1f"),
            _fmt(m.get("samples_per_second"), ".2f"), _fmt(m.get("peak_memory_mb"), ".0f"),
            _fmt(m.get("errors"), ".0f"), "new" if s.new else "reused"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def score_grid(points: Sequence[PointSummary], task: str) -> str:
    """``task``'s score as series (rows: the unpruned baseline, then each method or
    variant) by pruning rate (columns; points given a token count instead get a
    "keep N" column), as a markdown table: the pruning curves at a glance."""
    columns = sorted({_grid_column(s.point) for s in points})
    series: dict[str, dict[tuple, Optional[float]]] = {}
    for s in points:
        series.setdefault(s.series, {})[_grid_column(s.point)] = s.metrics.get(f"{task}/score")
    head = ["method"] + [label for _, _, label in columns]
    lines = [f"{task} score by pruning rate:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, scores in series.items():
        cells = [name] + [_fmt(scores[c], ".1f") if c in scores else "" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _grid_column(point: PruningConfig) -> tuple:
    """(order, value, label) of the point's column in :func:`score_grid`."""
    if point.method == NO_PRUNING:
        return (0, 0.0, "0%")
    if point.pruning_rate is not None:
        return (0, point.pruning_rate, f"{100 * point.pruning_rate:.1f}%")
    return (1, point.num_retain or 0, f"keep {point.num_retain}")


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else seconds * 1e3


def _fmt(value: Optional[float], spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


# ---------------------------------------------------------------- plots


def plot_scores(points: Sequence[PointSummary], tasks: Sequence[str], path: Path) -> Path:
    """Score vs pruning rate, one line per method (and layer/params), one panel per task,
    plus the Avg. % panel when the baseline scored above 0 somewhere."""
    panels = [(f"{t}/score", f"{t} score") for t in tasks]
    if any("avg_relative" in s.metrics for s in points):
        panels.append(("avg_relative", "Avg. % of unpruned"))
    return _rate_plot(points, panels, path, baseline_line=True)


def plot_speedups(points: Sequence[PointSummary], path: Path) -> Path:
    """Measured prefill and TTFT speed-up, and the theoretical FLOPs speed-up, vs pruning rate."""
    panels = [("prefill_speedup", "prefill speed-up (measured)"), ("ttft_speedup", "TTFT speed-up (measured)"),
              ("flops_speedup", "prefill FLOPs speed-up (theory)")]
    return _rate_plot(points, panels, path, baseline_line=True)


def _rate_plot(points, panels, path: Path, baseline_line: bool) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    baseline = next((s for s in points if s.point.method == NO_PRUNING), None)
    series: dict[str, list[PointSummary]] = {}
    for s in points:
        if s.point.method != NO_PRUNING:
            series.setdefault(s.series, []).append(s)
    for ax, (key, title) in zip(axes[0], panels):
        for label, members in series.items():
            xy = sorted((s.point.pruning_rate, s.metrics[key]) for s in members if key in s.metrics)
            if xy:
                ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", label=label)
        if baseline_line and baseline is not None and key in baseline.metrics:
            ax.axhline(baseline.metrics[key], color="grey", linestyle="--", label="none (unpruned)")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("pruning rate")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8)
    fig.tight_layout(rect=(0, 0.12 if handles else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- kept tokens


def picture_points(points: Sequence[PointSummary]) -> list[PointSummary]:
    """The rows of the kept-token pictures: per method (the baseline included) its first
    point at its highest rate, in grid order."""
    best: dict[str, PointSummary] = {}
    for s in points:
        current = best.get(s.point.method)
        if current is None or (s.point.pruning_rate or 0.0) > (current.point.pruning_rate or 0.0):
            best[s.point.method] = s
    return sorted(best.values(), key=list(points).index)


def kept_tokens_figure(task: str, samples: Sequence, picks: Sequence[tuple[str, Sequence[dict]]], path: Path,
                       *, frames: int, max_pixels: Optional[int] = None) -> Optional[Path]:
    """Kept visual tokens drawn on the first few samples of ``task``, one row per grid point.

    samples: the task's Samples (images as bytes, video paths), in row order.
    picks:   (label, that point's output rows for the task, in sample order) per row of
             the figure. A row's ``spans`` column holds each span's grid (T, H, W) and
             ``kept`` the kept indices into it in raster (t, y, x) order; pruned cells are
             darkened. The picture is stretched to the grid (the processor's own resize
             and crops are not redone), and a video shows up to four time slices, each on
             the first of its frames. Returns None when no sample has visual tokens.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = picks[0][1]
    chosen = [i for i, r in enumerate(reference) if not r["error"] and r.get("spans") and json.loads(r["spans"])]
    chosen = chosen[:SAMPLES_DRAWN]
    if not chosen:
        return None
    pictures = {i: _pictures(samples[i], frames, max_pixels) for i in chosen}
    panels = [[None if rows[i]["error"] or not rows[i].get("spans") else
               _panel(pictures[i], json.loads(rows[i]["spans"]), json.loads(rows[i]["kept"])) for i in chosen]
              for _, rows in picks]
    aspect = max(p.shape[0] / p.shape[1] for line in panels for p in line if p is not None)
    width = 3.4 if aspect > 0.5 else 5.0
    size = (width * len(chosen), (width * aspect + 0.6) * len(picks))
    fig, axes = plt.subplots(len(picks), len(chosen), figsize=size, squeeze=False)
    for row, (label, rows) in enumerate(picks):
        for col, i in enumerate(chosen):
            ax, r = axes[row][col], rows[i]
            ax.set_xticks([])
            ax.set_yticks([])
            if panels[row][col] is None:
                ax.text(0.5, 0.5, r["error"] or "no spans", ha="center", va="center", fontsize=7, wrap=True)
            else:
                ax.imshow(panels[row][col])
                ax.set_title(f"{r['id'][:10]}: {r['visual_tokens_before']}->{r['visual_tokens_after']}",
                             fontsize=8)
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(f"{task}: kept visual tokens (pruned ones darkened)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pictures(sample, frames: int, max_pixels: Optional[int]) -> dict:
    """The sample's images (RGB arrays) and video frames (T, H, W, 3), as the model got them."""
    images = []
    for data in sample.images:
        with Image.open(BytesIO(data)) as image:
            images.append(np.asarray(image.convert("RGB")))
    video = None
    if sample.video:
        from pipeline.video import read_frames

        video = read_frames(sample.video, frames, max_pixels=max_pixels)
    return {"images": images, "video": video}


def _panel(pictures: dict, spans: Sequence[dict], kept: Sequence[Sequence[int]]) -> np.ndarray:
    """The spans' tiles side by side: images in order, a video as time slices."""
    tiles, images = [], iter(pictures["images"])
    for span, keep in zip(spans, kept):
        t_count, h, w = span["grid"]
        keep = set(keep)
        if span["kind"] == "video" and pictures["video"] is not None:
            video = pictures["video"]
            for t in sorted({round(x) for x in np.linspace(0, t_count - 1, min(t_count, TILES_PER_SAMPLE))}):
                frame = video[min(len(video) - 1, t * len(video) // t_count)]
                first = t * h * w  # the slice's first index in the span's raster order
                tiles.append(_overlay(frame, h, w, {k - first for k in keep if first <= k < first + h * w}))
        else:
            picture = next(images, None)
            if picture is not None:
                tiles.append(_overlay(picture, h, w, keep))
    tiles = tiles[:TILES_PER_SAMPLE] or [np.zeros((8, 8, 3), np.uint8)]
    height = max(t.shape[0] for t in tiles)
    gap = np.full((height, 4, 3), 255, np.uint8)
    padded = [np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=255) for t in tiles]
    return np.concatenate([x for t in padded for x in (t, gap)][:-1], axis=1)


def _overlay(picture: np.ndarray, h: int, w: int, kept: set) -> np.ndarray:
    """``picture`` stretched to an (h, w) grid of cells, cells not in ``kept`` darkened."""
    cell = max(4, math.ceil(160 / max(h, w)))
    image = np.asarray(Image.fromarray(picture).resize((w * cell, h * cell), Image.BILINEAR)).astype(np.float32)
    mask = np.zeros((h, w), bool)
    for k in kept:
        if 0 <= k < h * w:
            mask[k // w, k % w] = True
    shade = np.where(np.kron(mask, np.ones((cell, cell), bool))[..., None], 1.0, 0.25)
    out = image * shade
    out[::cell, :, :] = 200  # thin grid lines between the cells
    out[:, ::cell, :] = 200
    return out.clip(0, 255).astype(np.uint8)
