"""jobs/train_tiny.py and the model it ships, tiny:qwen2_vl_synth."""

from __future__ import annotations

import json

import pytest

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
