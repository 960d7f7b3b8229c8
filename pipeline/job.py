"""One builder for the pipeline every entry point runs (pipeline.evaluate, jobs/sweep.py,
jobs/annotate.py): sources x grid points -> the results store, as one Ray Data job.

    ranges -> read -> decode -> infer (actor pool) -> score -> write      (pipeline.stages)

The driver only plans and counts: how many rows each source has and which (row, point)
pairs the store already holds are worked out by Ray tasks (:func:`prepare`); the
driver hands the read stage ranges of row indices, never a sample, and gets back one
small WRITTEN row per part file the workers wrote. Its memory does not grow with the
data, and a run that is interrupted loses at most the rows in flight: the next run
reads what is stored and computes the rest.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from pipeline import rows as contract
from pipeline.stages import DecodeStage, InferStage, ReadStage, ScoreStage, Todo, WriteStage, error_text
from pipeline.store import RowStore, rows_key
from pipeline.tasks.scoring import LMMS_EVAL, scoring_label

log = logging.getLogger("pipeline.job")

DECODE_CPUS = 0.5  # per decode task: two decode while one actor holds a core
# Model batches per block (and so per decode task and per actor task): Ray Data's per-task
# cost (~15-20 ms between tasks, ~2 ms between calls of one task on this machine) falls
# once per four model calls, and every model call but a block's last gets a full batch.
BATCHES_PER_BLOCK = 4


@dataclass(frozen=True)
class Resources:
    """How the infer stage is spread: actors (one model each), GPUs per actor, batch size."""

    actors: int = 1
    num_gpus: float = 0.0
    cpus_per_actor: float = 1.0
    batch_size: int = 4
    frames: int = 32
    max_pixels: Optional[int] = None
    device: Optional[str] = None  # default: cuda when the actor has a GPU, else cpu
    dtype: Optional[str] = None
    threads: Optional[int] = None  # torch CPU threads per actor (default: Ray's, = cpus_per_actor)
    # Deadlines (0: none): a sample's read and decode, and one model call, longer than
    # this kill their worker (a hung decoder or GPU); the job then retries and isolates
    # (pipeline.job.run). And how long the actors may take to start (an autoscaler adding
    # GPU nodes) before the job stops with an error.
    sample_timeout_s: float = 600.0
    batch_timeout_s: float = 3600.0
    actor_start_timeout_s: float = 1800.0

    def inputs(self) -> dict:
        """What changes the model's inputs or numbers (part of every stored row's key)."""
        return {"frames": self.frames, "max_pixels": self.max_pixels, "dtype": self.dtype}


@dataclass(frozen=True)
class Plan:
    """A job: every source's rows under every point, stored in ``store``.

    ``keep_errors=False`` (``--retry-errors``) answers again the rows stored with an error.
    ``scoring``: how the rows are scored (a checked ``pipeline.tasks.scoring`` name)."""

    model: str
    sources: tuple
    points: tuple  # PruningConfig per point id
    store: str
    resources: Resources = field(default_factory=Resources)
    keep_errors: bool = True
    # Rows per write task (a part file holds at most this many per (source, point)): what
    # an interruption can lose beyond the model batches in flight. None: one block of
    # BATCHES_PER_BLOCK model batches.
    write_rows: Optional[int] = None
    scoring: str = LMMS_EVAL

    def key(self, source, point: int) -> str:
        return rows_key(self.model, source, self.resources.inputs(), self.points[point].to_dict(),
                        scoring_label(self.scoring))

    def keys(self) -> dict[str, list[str]]:
        return {s.name: [self.key(s, p) for p in range(len(self.points))] for s in self.sources}


@dataclass
class Progress:
    """What a job found and did: per source its rows, per (source, point) the rows that
    were still to answer when it started and the rows it wrote."""

    counts: dict[str, int]
    pending: dict[tuple[str, int], int]
    written: dict[tuple[str, int], int] = field(default_factory=dict)
    errors: int = 0
    seconds: float = 0.0

    @property
    def total_pending(self) -> int:
        return sum(self.pending.values())

    def complete(self, point: int) -> bool:
        """Every row of every source is stored under ``point``."""
        return all(self.written.get((name, point), 0) >= todo
                   for (name, p), todo in self.pending.items() if p == point)


def init_ray() -> None:
    """Join RAY_ADDRESS's cluster when set, else start a local one (once per process)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), logging_level=logging.WARNING,
                 include_dashboard=False if not os.environ.get("RAY_ADDRESS") else None,
                 log_to_driver=False)


def prepare(plan: Plan) -> tuple[dict, dict, dict]:
    """``(counts, pending, todo refs)``, from Ray tasks: each source's row count, per
    (source, point) how many rows the store does not hold yet, and per source an object
    ref of its :class:`Todo` (for the read stage; the driver never fetches it)."""
    import ray

    @ray.remote(num_cpus=DECODE_CPUS, num_returns=3)
    def plan_source(source, store: str, keys: list[str], keep_errors: bool):
        count = source.count()
        masks = [~RowStore(store).done(source.name, key, count, keep_errors=keep_errors) for key in keys]
        return count, [int(m.sum()) for m in masks], Todo(range(len(keys)), masks)

    keys = plan.keys()
    refs = {s.name: plan_source.remote(s, plan.store, keys[s.name], plan.keep_errors) for s in plan.sources}
    counts = {name: ray.get(r[0]) for name, r in refs.items()}
    pending = {(name, p): n for name, r in refs.items() for p, n in enumerate(ray.get(r[1]))}
    return counts, pending, {name: r[2] for name, r in refs.items()}


def run(plan: Plan, *, on_start: Optional[Callable[[Progress], None]] = None,
        on_written: Optional[Callable[[dict], None]] = None, desc: str = "answers") -> Progress:
    """Run ``plan`` to completion. ``on_start`` sees what is to do before any work;
    ``on_written`` each WRITTEN row as it arrives (``progress.written`` already counts it).

    Failures stay bounded (see the module docstring of ``pipeline.stages`` for the
    per-row ones): a task or actor call whose worker dies (a crash, an OOM kill, a
    stage's deadline) is retried twice, then its block is set aside and the job goes on;
    the rows of set-aside blocks are then answered one per task, and a row that still
    kills its worker becomes an error row (:data:`LOST`). When the model fails on every
    row of many batches in a row, across actor replacements, the job stops with
    :class:`PipelineError` instead of writing error rows for the rest."""
    import ray
    from tqdm import tqdm

    init_ray()
    start = time.perf_counter()
    counts, pending, todo = prepare(plan)
    progress = Progress(counts, pending)
    _check_resources(plan.resources)
    if on_start is not None:
        on_start(progress)
    total = progress.total_pending
    log.info("%d rows in %d sources x %d points; %d (row, point) answers to compute, %d stored",
             sum(counts.values()), len(counts), len(plan.points), total,
             sum(counts.values()) * len(plan.points) - total)
    if total:
        ray.data.DataContext.get_current().enable_progress_bars = False  # one bar: the job's own
        bar = tqdm(total=total, desc=desc, unit="answer", file=sys.stderr, mininterval=1.0)
        breaker = _Breaker(plan.resources)
        ranges = None
        for attempt in ("blocks", "one row per task"):
            try:
                for batch in build(plan, counts, todo, ranges).iter_batches(batch_size=None, batch_format="pyarrow"):
                    for written in batch.to_pylist():
                        _count(progress, written, bar)
                        breaker.check(written)
                        if on_written is not None:
                            on_written(written)
            except ray.exceptions.RayActorError as exc:  # the model's actors cannot start (a bad checkpoint)
                raise PipelineError(f"the model's actors died: {_last_line(exc)}; the rows answered so far are "
                                    "stored, and a rerun continues from them") from exc
            left = _left(plan, counts)
            if not left:
                break
            lost = sum(len(indices) for indices in left.values())
            if attempt == "blocks":
                log.warning("%d rows were set aside with tasks whose workers died; answering them one per task",
                            lost)
                ranges = [{"source": name, "start": i, "stop": i + 1} for name, indices in left.items()
                          for i in indices]
                _, _, todo = prepare(plan)  # what this pass stored is done
            else:
                log.warning("%d rows killed their workers again: stored as error rows (%s)", lost, LOST)
                for written in _write_lost(plan, left):
                    _count(progress, written, bar)
                    if on_written is not None:
                        on_written(written)
        bar.close()
    progress.seconds = time.perf_counter() - start
    return progress


# The error of a row whose worker died (or missed a deadline) on every attempt.
LOST = ("lost: its worker died or missed its deadline on every attempt (a crash, an out-of-memory kill or a "
        "hang; the Ray logs have the details)")
ATTEMPTS = 3  # a task or actor call is tried this many times before its block is set aside


class PipelineError(RuntimeError):
    """The job cannot go on (the model fails on every row, resources the cluster lacks)."""


class _Breaker:
    """Stops the job when every row of the last ``limit`` answered rows failed in the
    model: an actor that fails several batches in a row is replaced (``InferStage``),
    and when its replacements fail as well the cause is not one bad sample."""

    def __init__(self, resources: Resources):
        # Every actor through two replacements: its first block and one per fresh process.
        self.limit = 3 * resources.actors * resources.batch_size * BATCHES_PER_BLOCK
        self.failed, self.last = 0, None

    def check(self, written: dict) -> None:
        if written["model_errors"] < written["rows"]:
            self.failed = 0
            return
        self.failed += written["rows"]
        self.last = written["first_error"]
        if self.failed >= self.limit:
            raise PipelineError(f"stopping: the model failed on each of the last {self.failed} answers, across "
                                f"actor replacements (last error: {self.last}); the rows answered so far are "
                                "stored, and a rerun continues from them")


def _last_line(exc: BaseException) -> str:
    """The innermost error line of a Ray error (its text ends with the remote traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return error_text(lines[-1] if lines else type(exc).__name__)


def _count(progress: Progress, written: dict, bar) -> None:
    key = (written["task"], written["point"])
    progress.written[key] = progress.written.get(key, 0) + written["rows"]
    progress.errors += written["errors"]
    bar.update(written["rows"])
    bar.set_postfix(errors=progress.errors, refresh=False)


def _left(plan: Plan, counts: dict) -> dict[str, list[int]]:
    """Per source, the rows some point still lacks after a pass (Ray tasks read the store)."""
    import ray

    @ray.remote(num_cpus=0)
    def left(store: str, name: str, keys: list[str], count: int) -> list[int]:
        import numpy as np

        missing = np.zeros(count, dtype=bool)
        for key in keys:
            missing |= ~RowStore(store).done(name, key, count, keep_errors=True)
        return np.nonzero(missing)[0].tolist()

    keys = plan.keys()
    refs = {s.name: left.remote(plan.store, s.name, keys[s.name], counts[s.name]) for s in plan.sources}
    return {name: indices for name, ref in refs.items() if (indices := ray.get(ref))}


def _write_lost(plan: Plan, left: dict[str, list[int]]) -> list[dict]:
    """Error rows (:data:`LOST`) for the rows no attempt could answer, per point that lacks
    them; a Ray task per source reads the store's done masks and writes them (the driver
    reads no rows)."""
    import ray

    @ray.remote(num_cpus=0)
    def write(store_path: str, name: str, keys: list[str], indices: list[int]) -> list[dict]:
        store, written = RowStore(store_path), []
        for point, key in enumerate(keys):
            done = store.done(name, key, max(indices) + 1)
            rows = [{"index": i, "task": name, "id": f"row {i}", "point": point, "error": LOST, "score": 0.0}
                    for i in indices if not done[i]]
            if rows:
                path = store.write(contract.table(rows, contract.SCORED), name, key)
                written.append({"task": name, "point": point, "rows": len(rows), "errors": len(rows),
                                "model_errors": 0, "first_error": LOST, "path": path})
        return written

    keys = plan.keys()
    refs = [write.remote(plan.store, s.name, keys[s.name], left[s.name]) for s in plan.sources if left.get(s.name)]
    return [record for ref in refs for record in ray.get(ref)]


def _check_resources(resources: Resources) -> None:
    """Refuse GPUs a local cluster does not have (it would wait for them forever); a joined
    cluster may add them (an autoscaler), so there the actors' start has a deadline."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0.0)
    if resources.num_gpus > gpus and not os.environ.get("RAY_ADDRESS"):
        raise PipelineError(f"resources.num_gpus: each actor asks for {resources.num_gpus:g} GPUs, but this local "
                            f"Ray cluster has {gpus:g}; use num_gpus: 0 on a CPU machine")
    ray.data.DataContext.get_current().wait_for_min_actors_s = int(resources.actor_start_timeout_s) or -1


def build(plan: Plan, counts: dict, todo: dict, ranges: Optional[list[dict]] = None):
    """The Ray Dataset of the whole pipeline over ``plan`` (see the module docstring), over
    ``ranges`` (default: every source in blocks of BATCHES_PER_BLOCK model batches)."""
    import ray

    r = plan.resources
    block = r.batch_size * BATCHES_PER_BLOCK
    if ranges is None:
        ranges = [{"source": name, "start": start, "stop": min(start + block, count)}
                  for name, count in counts.items() for start in range(0, count, block)]
    # A block whose task fails ATTEMPTS times is set aside, not the end of the job (run()).
    ray.data.DataContext.get_current().max_errored_blocks = -1
    retries = {"max_retries": ATTEMPTS - 1}
    gpu = r.num_gpus > 0
    cluster_cpus = ray.cluster_resources().get("CPU", 1.0)
    actor_cpus = _actor_cpus(r, cluster_cpus)
    warm_cpu_workers(plan.model, cluster_cpus - r.actors * actor_cpus)
    scored = [s.name for s in plan.sources if s.scored]
    ds = ray.data.from_items(ranges, override_num_blocks=max(1, len(ranges)))
    # Stateless stages run as tasks (an instance is a plain callable to Ray Data); the
    # infer stage is a class, so Ray Data runs it as an actor pool. Reading and decoding
    # ask for their own CPU share: with remote arguments unlike the actors', Ray Data
    # does not fuse them into the actor, so the model never waits on them.
    ds = ds.map_batches(ReadStage({s.name: s for s in plan.sources}, todo, r.sample_timeout_s), batch_size=1,
                        batch_format="pyarrow", num_cpus=DECODE_CPUS, **retries)
    # Decoding takes whatever one read gives (batch_size None): with a batch size, Ray Data
    # would bundle several ranges into one task to fill it, so that a worker that dies
    # would take them all down, and the one-row ranges of run()'s second pass together.
    ds = ds.map_batches(DecodeStage(plan.model, r.frames, r.max_pixels, r.sample_timeout_s),
                        batch_size=None, batch_format="pyarrow", num_cpus=DECODE_CPUS, **retries)
    ds = ds.map_batches(InferStage, fn_constructor_kwargs={
                            "model": plan.model, "points": [p.to_dict() for p in plan.points],
                            "device": r.device or ("cuda" if gpu else "cpu"), "dtype": r.dtype,
                            "threads": r.threads,
                            # More than one GPU per actor: the model split over the actor's GPUs.
                            "device_map": "auto" if r.num_gpus > 1 else None,
                            "batch_timeout_s": r.batch_timeout_s},
                        batch_size=r.batch_size, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=r.actors), num_gpus=r.num_gpus,
                        num_cpus=actor_cpus, max_restarts=-1, max_task_retries=ATTEMPTS - 1)
    write = plan.write_rows or block
    ds = ds.map_batches(ScoreStage(scored, plan.scoring), batch_format="pyarrow", batch_size=write,
                        num_cpus=DECODE_CPUS, **retries)
    return ds.map_batches(WriteStage(plan.store, plan.keys()), batch_format="pyarrow", batch_size=write,
                          num_cpus=DECODE_CPUS, **retries)


def warm_cpu_workers(model: str, free_cpus: float) -> None:
    """Start the CPU stage's worker processes while the actors load their models: one
    task per decode slot left beside the actors imports torch and transformers and loads
    ``model``'s processor (cached per process), and Ray hands the decode tasks to these
    idle workers. Without it the first decode tasks pay that start-up (seconds) while the
    model waits (benchmarks/pipeline.py). Fire and forget: a failure here only loses the
    head start."""
    import ray

    @ray.remote(num_cpus=DECODE_CPUS)
    def warm(spec: str) -> None:
        from pipeline.infer import Preparer

        Preparer.from_spec(spec)

    for _ in range(max(1, min(8, int(free_cpus / DECODE_CPUS)))):
        warm.remote(model)


def _actor_cpus(resources: Resources, cluster_cpus: float) -> float:
    """CPUs each actor reserves, lowered when the actors would leave none for decoding
    (e.g. 2 actors on a 2-CPU machine): Ray's CPUs are logical, and a decode stage that can
    never be scheduled would stall the whole pipeline."""
    wanted = resources.cpus_per_actor
    if resources.actors * wanted + DECODE_CPUS > cluster_cpus:
        wanted = max(0.1, (cluster_cpus - DECODE_CPUS) / resources.actors)
    return wanted


def stored(plan: Plan, source, point: int, count: int, columns: Optional[Sequence[str]] = None):
    """The stored SCORED rows of ``source`` under ``point`` (first ``count`` rows), as Arrow."""
    return RowStore(plan.store).read(source.name, plan.key(source, point), count=count, columns=columns)


__all__ = ["BATCHES_PER_BLOCK", "Plan", "Progress", "Resources", "build", "contract", "init_ray", "prepare",
           "run", "stored"]
