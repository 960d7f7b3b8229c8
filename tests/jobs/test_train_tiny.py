"""jobs/train_tiny.py and the model it ships, tiny:qwen2_vl_synth."""

from __future__ import annotations

import json

import pytest
import torch

from jobs import train_tiny
from pipeline import synthetic
from pipeline.models import load_model


def test_batches_use_every_train_index_once_and_never_mix_images_with_clips():
    seen = []
    cycle = len(synthetic.KINDS)
    for step in range(4 * cycle):
        batch = train_tiny.batch_indices(step, 8)
        kinds = {synthetic.KINDS[i % cycle] for i in batch}
        assert kinds == {"moved"} if step % cycle == cycle - 1 else "moved" not in kinds
        seen += batch
    assert sorted(seen) == list(range(len(seen)))


def test_curriculum_shrinks_objects_to_the_test_size():
    scales = [train_tiny.curriculum_scale(s, 100) for s in range(100)]
    assert scales[0] == train_tiny.START_SCALE and scales[60:] == [1.0] * 40
    assert all(a >= b for a, b in zip(scales, scales[1:]))


def test_learning_rate_warms_up_then_decays():
    lrs = [train_tiny.learning_rate(s, 100, 1e-3, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] >= 0.05e-3


@pytest.fixture(scope="module")
def untrained():
    from pipeline.tiny import synth

    return synth.build()


def test_encode_scores_only_the_answer(untrained):
    _, processor = untrained
    examples = [synthetic.example("train", i) for i in (0, 1, 2)]  # a colour word, a letter, a digit
    inputs = train_tiny.encode(processor, examples, with_answers=True)
    tok = processor.tokenizer
    for b, ex in enumerate(examples):
        scored = inputs["labels"][b][inputs["labels"][b] != -100].tolist()
        assert tok.decode(scored) == ex.answer + "<|im_end|>"
        assert synthetic.prompt(ex) in tok.decode(inputs["input_ids"][b])
    assert int((inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum()) == 3 * 144


def test_token_targets_mark_the_cells_of_what_was_drawn():
    ex = synthetic.example("test", 0)  # colour: one object
    (shape, colour, x, y, side), = ex.details["objects"]
    targets = train_tiny.token_targets(ex)
    r, c = (y + side // 2) // 28, (x + side // 2) // 28
    assert targets["colour"][0, r, c] == 1 + list(synthetic.COLOURS).index(colour)
    assert targets["shape"][0, r, c] == 1 + synthetic.SHAPES.index(shape)
    assert int((targets["colour"] > 0).sum()) <= 4 and int(targets["motion"].sum()) == 0
    clip = synthetic.example("test", 4)
    assert clip.kind == "moved"
    motion = train_tiny.token_targets(clip)["motion"]
    assert motion.shape == (4, 8, 8) and all(int(motion[g].sum()) >= 1 for g in range(4))


def test_a_short_training_run_saves_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "synth"
    train_tiny.train(out, steps=2, batch_size=2, lr=1e-3, warmup=1, seed=0, threads=1, eval_every=2, eval_size=5,
                     vision_steps=2)
    summary = json.loads((out / "training.json").read_text())
    assert summary["steps"] == 2 and set(synthetic.KINDS) <= set(summary["validation"])
    assert set(summary["vision_probe_accuracy"]) <= set(train_tiny.HEADS)
    model, processor = load_model(out)
    assert model.config.model_type == "qwen2_vl" and processor.image_processor.size["longest_edge"] == 336 * 336


def test_the_trained_model_name_says_how_to_train_it_when_missing(tmp_path, monkeypatch):
    from pipeline import models, tiny

    monkeypatch.setitem(tiny.TRAINED, "qwen2_vl_synth", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="jobs/train_tiny.py"):
        models.load_model("tiny:qwen2_vl_synth")


def test_dense_stage_one_pictures_label_many_cells():
    picture = train_tiny.dense_example(0, video=False)
    targets = train_tiny.token_targets(picture)
    assert int((targets["colour"] > 0).sum()) + int((targets["digit"] > 0).sum()) >= 10
    clip = train_tiny.dense_example(0, video=True)
    assert clip.frames.shape[0] == synthetic.VIDEO_FRAMES
    assert int(train_tiny.token_targets(clip)["motion"].sum()) == 0 or clip.details["movers"]


def test_attention_targets_are_the_answer_cells():
    """Colour/shape: the object's cell; count: every object's; digit: the digit's;
    moved: the mover's cells."""
    for index, kind in enumerate(synthetic.KINDS):
        ex = synthetic.example("test", index)
        assert ex.kind == kind
        targets = train_tiny.token_targets(ex)
        cells = train_tiny.answer_cells(ex, targets)
        if kind == "digit":
            assert cells.equal((targets["digit"] > 0).flatten()) and 0 < cells.sum() < 4
        elif kind == "moved":
            assert cells.equal((targets["motion"] > 0).flatten()) and cells.sum() > 0
        else:
            assert cells.equal((targets["colour"] > 0).flatten())
            assert cells.sum() == (len(ex.details["objects"]) if kind == "count" else 1)


def test_count_supervision_is_least_when_each_object_weighs_as_much_as_the_text():
    """One count example, hand-made attention rows: the loss is 0 exactly at the target
    split (n / (n + 1) on the objects, the rest on the text) and grows away from it."""
    ex = next(synthetic.example("train", i) for i in range(2, 100, 5) if synthetic.example("train", i).kind == "count")
    n = len(ex.details["objects"])
    targets = [train_tiny.token_targets(ex)]
    cells = train_tiny.answer_cells(ex, targets[0])
    text, visual_id = 5, 99
    ids = torch.cat([torch.zeros(text, dtype=torch.long), torch.full((cells.numel(),), visual_id),
                     torch.zeros(1, dtype=torch.long)])[None]
    labels = torch.full_like(ids, -100)
    labels[0, -1] = 0
    query = ids.shape[1] - 2
    objects = text + cells.nonzero().squeeze(1)

    def loss(on_objects, on_background=0.0):
        w = torch.zeros(1, 1, ids.shape[1], ids.shape[1])
        w[0, 0, query, :text] = (1 - on_objects - on_background) / text
        w[0, 0, query, text:text + cells.numel()] = on_background / (cells.numel() - n)
        w[0, 0, query, objects] = on_objects / n
        inputs = {"input_ids": ids, "labels": labels}
        return float(train_tiny.attention_loss({1: w}, inputs, [ex], targets, (visual_id,)))

    best = train_tiny.count_share(n)
    assert best == n / (n + 1)
    assert loss(best) == pytest.approx(0.0, abs=1e-4)
    assert loss(1.0 - 1e-3) > 0.1 and loss(0.3) > 0.05 and loss(best - 0.2, 0.2) > loss(best - 0.2)



# ---------------------------------------------------------------- the shipped model


@pytest.fixture(scope="module")
def shipped():
    from pipeline.infer import Generator
    from pipeline.tiny import TRAINED

    if not (TRAINED["qwen2_vl_synth"] / "config.json").is_file():
        pytest.fail("the trained tiny model is missing from the package: run jobs/train_tiny.py")
    return Generator("tiny:qwen2_vl_synth")


def test_shipped_weights_fit_the_package_budget_and_say_how_they_were_made():
    from pipeline.tiny import TRAINED

    folder = TRAINED["qwen2_vl_synth"]
    assert (folder / "model.safetensors").stat().st_size <= 20 * 2**20
    training = json.loads((folder / "training.json").read_text())
    assert training["validation"]["all"] >= 0.9 and training["seconds"] < 30 * 60


def _accuracy(generator, examples, config) -> float:
    """Share of ``examples`` answered right through the task's own parser and scorer."""
    from pipeline.infer import Request
    from pipeline.tasks import Sample, get_task

    task = get_task("synthetic_fine")
    scores = []
    for lo in range(0, len(examples), 10):
        chunk = examples[lo:lo + 10]
        requests = [Request(synthetic.prompt(ex), images=[ex.image] if ex.image is not None else [],
                            frames=ex.frames, max_new_tokens=task.max_new_tokens) for ex in chunk]
        for ex, answer in zip(chunk, generator.run(requests, config)):
            sample = Sample(id="", prompt="", answer=ex.answer, meta={"kind": ex.kind, "options": ex.options})
            scores.append(task.score(task.parse(answer.text, sample), sample))
    return sum(scores) / len(scores)


def test_the_shipped_model_reads_small_details_and_random_pruning_loses_them(shipped):
    """50 test questions (10 of each kind): nearly all right unpruned; keeping 11% of the
    tokens at random loses most details, VLM-Pruner at the same rate keeps them."""
    from pruning import PruningConfig

    examples = [synthetic.example("test", i) for i in range(50)]
    full = _accuracy(shipped, examples, PruningConfig.none())
    random = _accuracy(shipped, examples, PruningConfig(method="random", pruning_rate=0.889))
    kept = _accuracy(shipped, examples, PruningConfig(method="vlm_pruner", pruning_rate=0.889))
    assert full >= 0.85, full
    assert random <= full - 0.3, (full, random)
    assert kept >= full - 0.1, (full, kept)
