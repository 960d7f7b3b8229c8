"""PruningConfig: validation, defaults, (de)serialisation, and the methods' parameter schemas."""

from __future__ import annotations

import dataclasses
import doctest
import inspect

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlavaConfig

import pruning
import pruning.config
from pruning import PruningConfig
from pruning.methods import get_method, list_methods, vlm_pruner

# Every invalid configuration, and the field its error must name.
INVALID = [
    (dict(method="vlm_pruner", pruning_rate=1.0), r"pruning_rate must be a number in \[0, 1\)"),
    (dict(method="vlm_pruner", pruning_rate=-0.1), r"pruning_rate must be a number in \[0, 1\)"),
    (dict(method="vlm_pruner", pruning_rate="0.5"), r"pruning_rate must be a number"),
    (dict(method="vlm_pruner", pruning_rate=float("nan")), r"pruning_rate must be a number"),
    (dict(method="vlm_pruner", pruning_rate=0.5, num_retain=64), r"exactly one of pruning_rate .* num_retain"),
    (dict(method="vlm_pruner"), r"exactly one of pruning_rate .* num_retain"),
    (dict(method="vlm_pruner", num_retain=0), r"num_retain must be an integer >= 1"),
    (dict(method="vlm_pruner", num_retain=6.4), r"num_retain must be an integer >= 1"),
    (dict(method="vlm_pruner", num_retain=True), r"num_retain must be an integer >= 1"),
    (dict(method="token_merging_2031", pruning_rate=0.5), r"method must be one of cdpruner, dart, divprune, .*vlm_pruner, none"),
    (dict(method="vlm_pruner", pruning_rate=0.5, layer=-1), r"layer must be an integer >= 0 for vlm_pruner"),
    (dict(method="fastv", pruning_rate=0.5, layer=0), r"layer must be an integer >= 1 for fastv"),
    (dict(method="dart", pruning_rate=0.5, layer=0), r"layer must be an integer >= 1 for dart"),
    (dict(method="divprune", pruning_rate=0.5, layer=-1), r"layer must be an integer >= 0 for divprune"),
    (dict(method="random", pruning_rate=0.5, layer=1.5), r"layer must be an integer >= 0"),
    (dict(method="vlm_pruner", pruning_rate=0.5, params={"token_batch": 0}),
     r"params.token_batch must be an integer >= 1, got 0"),
    (dict(method="vlm_pruner", pruning_rate=0.5, params={"token_batch": 8.0}),
     r"params.token_batch must be an integer >= 1, got 8.0"),
    (dict(method="vlm_pruner", pruning_rate=0.5, params={"num_pivots": "4"}), r"params.num_pivots must be an integer"),
    (dict(method="vlm_pruner", pruning_rate=0.5, params={"threshold": -0.1}), r"params.threshold must be a number >= 0"),
    (dict(method="vlm_pruner", pruning_rate=0.5, params={"spatial_lambda": True}),
     r"params.spatial_lambda must be a number >= 0"),
    (dict(method="vlm_pruner", pruning_rate=0.5, params={"merge_weight": 1.5}),
     r"params.merge_weight must be a number in \[0, 1\], got 1.5"),
    (dict(method="dart", pruning_rate=0.5, params={"num_text_pivots": -1}), r"params.num_text_pivots must be an integer >= 1"),
    (dict(method="random", pruning_rate=0.5, params={"seed": -1}), r"params.seed must be an integer >= 0"),
    (dict(method="vlm_pruner", pruning_rate=0.5, params={"tau": 0.8}),
     r"params.tau is not a parameter of vlm_pruner \(its parameters: adaptive_lambda, merge_weight, num_pivots, .*top_channels"),
    (dict(method="fastv", pruning_rate=0.5, params={"seed": 1}), r"params.seed is not a parameter of fastv \(fastv takes no"),
    (dict(method="vlm_pruner", pruning_rate=0.5, params=[("token_batch", 8)]), r"params must be a mapping"),
    (dict(method="none", pruning_rate=0.5), r"pruning_rate must be unset or 0 for method 'none'"),
    (dict(method="none", num_retain=64), r"num_retain must be unset for method 'none'"),
    (dict(method="none", layer=2), r"layer must be unset for method 'none'"),
    (dict(method="none", params={"seed": 0}), r"params must be empty for method 'none'"),
]


@pytest.mark.parametrize("values, message", INVALID, ids=[str(v) for v, _ in INVALID])
def test_invalid_configs_are_refused_naming_the_field(values, message):
    with pytest.raises(ValueError, match=message):
        PruningConfig(**values)


@pytest.mark.parametrize("method", ["vlm_pruner", "fastv", "dart"])
def test_layer_must_fit_the_model(method):
    config = PruningConfig(method, pruning_rate=0.5, layer=4)
    with pytest.raises(ValueError, match=r"layer must be in \[[01], 3\] for .* 4 decoder layers, got 4"):
        config.validate(num_layers=4)
    with pytest.raises(ValueError, match=r"layer must be in \[[01], 3\]"):
        config.check_against(LlamaConfig(num_hidden_layers=4))
    assert config.validate(num_layers=5) is config
    assert config.validate() is config  # no model: nothing more to check
    assert PruningConfig(method, pruning_rate=0.5, layer=31).check_against(LlavaConfig()).layer == 31


def test_layer_0_methods_fit_any_model():
    assert PruningConfig("divprune", pruning_rate=0.5).validate(num_layers=1).layer == 0
    with pytest.raises(ValueError, match=r"layer must be in \[0, 0\]"):
        PruningConfig("uniform", pruning_rate=0.5, layer=1).validate(num_layers=1)


@pytest.mark.parametrize("method, layer, params", [
    ("vlm_pruner", 2, dict(num_pivots=4, top_channels=256, threshold=0.8, spatial_lambda=0.5,
                           token_batch=16, merge_weight=0.3, temporal_scale=1.0, adaptive_lambda=0.0)),
    ("fastv", 2, {}),
    ("dart", 2, dict(num_visual_pivots=4, num_text_pivots=4)),
    ("divprune", 0, {}),
    ("random", 0, dict(seed=0)),
    ("uniform", 0, {}),
])
def test_defaults_per_method(method, layer, params):
    config = PruningConfig(method, pruning_rate=0.889)
    assert config.layer == layer
    assert config.method_params() == params
    assert config.params == params
    assert not config.is_identity


def test_known_methods_match_the_registry():
    for method in list_methods():
        PruningConfig(method, num_retain=8)
    # every module of pruning/methods that registers a method registers it under its file name
    from pathlib import Path

    import pruning.methods

    folder = Path(pruning.methods.__file__).parent
    helpers = {"__init__", "registry", "checks", "vlm_pruner_cpu", "vlm_pruner_triton"}
    assert set(list_methods()) == {p.stem for p in folder.glob("*.py")} - helpers


def test_values_are_normalised():
    config = PruningConfig("vlm_pruner", pruning_rate=0, params={"threshold": 1, "merge_weight": 0})
    assert config.pruning_rate == 0.0 and isinstance(config.pruning_rate, float)
    assert isinstance(config.params["threshold"], float) and isinstance(config.params["merge_weight"], float)
    assert config.is_identity  # rate 0 keeps every token


# Parameter schemas -----------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(list_methods()))
def test_params_schema_matches_select_signature(method):
    """Each PARAMS default is select()'s default, and every scalar keyword-only parameter
    of select() (what a config can set; tensors and devices are not) is in PARAMS."""
    spec = get_method(method)
    module = inspect.getmodule(spec.select)
    assert dict(spec.params) == module.PARAMS
    signature = inspect.signature(spec.select).parameters
    for name, param in spec.params.items():
        assert name in signature, f"{method}.PARAMS has {name}, select() does not"
        assert signature[name].default == param.default, name
        assert type(signature[name].default) is param.kind, name
        assert param.help
    scalar_keywords = {name for name, p in signature.items() if p.kind is p.KEYWORD_ONLY
                       and type(p.default) in (int, float)}
    assert scalar_keywords == set(spec.params)


def test_method_params_feed_select():
    config = PruningConfig.from_dict({"method": "vlm_pruner", "pruning_rate": 0.75, "token_batch": 2})
    g = torch.Generator().manual_seed(0)
    hidden, keys = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    selection = vlm_pruner.select(hidden, keys, (1, 4, 4), config.num_retain_for(16), **config.method_params())
    assert selection.keep.numel() == 4


# Reading and writing -------------------------------------------------------------------


def test_from_dict_flat_nested_and_dotted_params_agree():
    flat = PruningConfig.from_dict({"method": "vlm_pruner", "pruning_rate": 0.889, "token_batch": 8})
    nested = PruningConfig.from_dict({"method": "vlm_pruner", "pruning_rate": 0.889, "params": {"token_batch": 8}})
    dotted = PruningConfig.from_dict({"method": "vlm_pruner", "pruning_rate": 0.889, "params.token_batch": 8})
    mixed = PruningConfig.from_dict({"method": "vlm_pruner", "pruning_rate": 0.889, "params": {"token_batch": 8},
                                     "merge_weight": 0.5})
    assert flat == nested == dotted
    assert flat.params["token_batch"] == 8 and flat.layer == 2
    assert mixed.params["token_batch"] == 8 and mixed.params["merge_weight"] == 0.5


def test_from_dict_errors():
    with pytest.raises(ValueError, match=r"params.token_batch is given twice"):
        PruningConfig.from_dict({"method": "vlm_pruner", "pruning_rate": 0.5, "token_batch": 8,
                                 "params": {"token_batch": 4}})
    with pytest.raises(ValueError, match=r"method is required; one of cdpruner, dart, .*none"):
        PruningConfig.from_dict({"pruning_rate": 0.5})
    with pytest.raises(ValueError, match=r"params.pruning_rte is not a parameter of vlm_pruner"):
        PruningConfig.from_dict({"method": "vlm_pruner", "pruning_rate": 0.5, "pruning_rte": 0.5})
    with pytest.raises(ValueError, match=r"must be a mapping"):
        PruningConfig.from_dict([("method", "fastv")])


def test_yaml_round_trip(tmp_path):
    config = PruningConfig("dart", num_retain=64, layer=3, params={"num_text_pivots": 2})
    assert PruningConfig.from_yaml(config.to_yaml()) == config
    path = tmp_path / "pruning.yaml"
    path.write_text(config.to_yaml())
    assert PruningConfig.from_yaml(path) == config
    assert PruningConfig.from_yaml(str(path)) == config
    assert yaml.safe_load(config.to_yaml()) == config.to_dict()


def test_from_yaml_as_a_user_writes_it():
    text = """
    method: vlm_pruner
    pruning_rate: 0.889
    params:
      token_batch: 1       # exact sequential greedy
    """
    config = PruningConfig.from_yaml(text)
    assert config.params["token_batch"] == 1 and config.params["threshold"] == 0.8
    assert PruningConfig.from_yaml("method: none") == PruningConfig.none()
    with pytest.raises(ValueError, match=r"expected a YAML mapping or the path of a YAML file"):
        PruningConfig.from_yaml("no/such/file.yaml")


def test_flat_is_what_gets_logged():
    config = PruningConfig("vlm_pruner", pruning_rate=0.889, params={"token_batch": 8})
    assert config.flat() == {
        "method": "vlm_pruner", "pruning_rate": 0.889, "layer": 2, "positions": "original",
        "params.adaptive_lambda": 0.0, "params.merge_weight": 0.3, "params.num_pivots": 4, "params.spatial_lambda": 0.5,
        "params.temporal_scale": 1.0, "params.threshold": 0.8, "params.token_batch": 8,
        "params.top_channels": 256,
    }
    assert PruningConfig("fastv", num_retain=64).flat() == {"method": "fastv", "num_retain": 64, "layer": 2,
                                                            "positions": "original"}
    assert PruningConfig.none().flat() == {"method": "none"}
    assert PruningConfig.from_dict(config.flat()) == config  # the logged params rebuild the config


def test_hashable_equal_and_frozen():
    implicit = PruningConfig("vlm_pruner", pruning_rate=0.889)
    explicit = PruningConfig("vlm_pruner", pruning_rate=0.889, layer=2, params={"token_batch": 16, "threshold": 0.8})
    other = PruningConfig("vlm_pruner", pruning_rate=0.889, params={"token_batch": 8})
    assert implicit == explicit and hash(implicit) == hash(explicit)
    assert implicit != other
    assert len({implicit, explicit, other, PruningConfig.none(), PruningConfig.none()}) == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        implicit.pruning_rate = 0.5
    with pytest.raises(TypeError):
        implicit.params["token_batch"] = 1
    implicit.method_params()["token_batch"] = 1  # a copy
    assert implicit.params["token_batch"] == 16


def test_fields_are_described():
    for f in dataclasses.fields(PruningConfig):
        assert f.metadata.get("help"), f.name


# Retained counts and the unpruned baseline -----------------------------------------------


@pytest.mark.parametrize("rate, n, expected", [
    (0.889, 576, 64),   # spec: 576 at 88.9% -> 64
    (0.0, 576, 576),
    (0.75, 64, 16),
    (0.99, 5, 1),       # at least one token of a non-empty span
    (0.5, 0, 0),
])
def test_num_retain_for_rate(rate, n, expected):
    assert PruningConfig("fastv", pruning_rate=rate).num_retain_for(n) == expected


def test_num_retain_for_count_and_none():
    assert PruningConfig("fastv", num_retain=64).num_retain_for(576) == 64
    assert PruningConfig("fastv", num_retain=64).num_retain_for(10) == 10
    assert PruningConfig.none().num_retain_for(576) == 576
    with pytest.raises(ValueError, match="n_tokens must be an integer >= 0"):
        PruningConfig.none().num_retain_for(-1)


def test_none_is_the_unpruned_baseline():
    base = PruningConfig.none()
    assert base.method == "none" and base.is_identity
    assert base.layer is None and base.pruning_rate is None and base.method_params() == {}
    assert PruningConfig("none", pruning_rate=0) == base
    assert base.validate(num_layers=1) is base
    assert pruning.PruningConfig is PruningConfig


def test_module_examples():
    assert doctest.testmod(pruning.config).failed == 0
