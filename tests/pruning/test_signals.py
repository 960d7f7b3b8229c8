"""A method's declared signals are its argument contract: a method defined here, in one
function, runs through ``pruning.apply`` on real tiny models with no engine change and
gets exactly the states the engine promises; a signal the engine does not provide, or
one ``select`` does not take, is refused at registration; no method name appears in the
engine or the pipeline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import pruning
from pruning import PruningConfig
from pruning.methods import Selection, list_methods, register
from pruning.methods.registry import _REGISTRY, SIGNALS
from pruning.models import family_for
from tests.pruning.conftest import build_inputs

REPO = Path(__file__).resolve().parents[2]
SEEN: list[dict] = []


@pytest.fixture
def norm_topk():
    """A method that keeps the R tokens of largest hidden-state norm, recording what it got."""
    name = "test_norm_topk"

    @register(name, signals=("hidden_states", "key_states", "grid", "device"), default_layer=2, min_layer=1)
    def select(hidden_states, key_states, grid, device, num_retain):
        SEEN.append({"hidden": hidden_states.clone(), "keys": key_states.clone(), "grid": grid, "device": device})
        top = hidden_states.float().norm(dim=1).topk(min(num_retain, hidden_states.shape[0])).indices
        return Selection(torch.sort(top).values)

    SEEN.clear()
    yield name
    _REGISTRY.pop(name)


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_a_new_method_needs_no_engine_change(tiny, family, norm_topk):
    model, processor = tiny(family)
    inputs = build_inputs(processor, family, ["image"])
    entering = {}
    layers = family_for(model).text_model(model).layers

    def record(module, args, kwargs):
        entering.setdefault("hidden", kwargs.get("hidden_states", args[0] if args else None).clone())

    hook = layers[2].register_forward_pre_hook(record, with_kwargs=True)
    try:
        with pruning.apply(model, PruningConfig(method=norm_topk, pruning_rate=0.75)) as handle:
            with torch.no_grad():
                model(**inputs)
            (span,) = handle.stats.samples[0]
    finally:
        hook.remove()
    (seen,) = SEEN
    n = span.before
    assert seen["hidden"].shape[0] == n and seen["keys"].shape[0] == n
    assert seen["grid"] == span.grid and seen["device"] == entering["hidden"].device
    family = family_for(model)
    (positions,) = [s.positions for s in family.spans(model, inputs["input_ids"], dict(inputs))[0]]
    assert torch.equal(seen["hidden"], entering["hidden"][0, positions])  # the states entering layer K
    expected = torch.sort(seen["hidden"].float().norm(dim=1).topk(span.after).indices).values
    assert span.keep == expected.tolist() and 0 < span.after < n


def test_registration_checks_the_signals_against_select():
    with pytest.raises(ValueError, match="unknown signal 'optical_flow'"):
        register("test_bad_signal", signals=("optical_flow",), default_layer=0)(
            lambda optical_flow, num_retain: None)
    with pytest.raises(ValueError, match="select takes no argument 'grid'"):
        register("test_bad_argument", signals=("grid",), default_layer=0)(lambda size, num_retain: None)
    assert "test_bad_signal" not in list_methods() and "test_bad_argument" not in list_methods()


def test_every_method_declares_only_provided_signals():
    for name in list_methods():
        spec = pruning.methods.get_method(name)
        assert set(spec.signals) <= set(SIGNALS), name


def test_no_method_name_in_the_engine_or_the_pipeline():
    sources = [REPO / "pruning" / "engine.py", REPO / "pruning" / "seams.py", REPO / "pruning" / "flops.py",
               REPO / "pipeline" / "infer.py", REPO / "pipeline" / "stages.py", REPO / "pipeline" / "job.py"]
    for path in sources:
        code = "\n".join(line for line in path.read_text().splitlines()
                         if not line.strip().startswith(("#", ">>>")))
        for name in list_methods():
            assert not re.search(rf"[\"']{name}[\"']", code), f"{path.name} names the method {name!r}"
