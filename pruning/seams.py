"""The transformers internals ``pruning.apply`` relies on, checked before any hook is installed.

The engine hooks modules and reads the arguments transformers passes between them.
None of that is a public promise: transformers 5.24 renamed ``past_key_values`` to
``cache`` in every forward and in ``create_causal_mask``, and an engine that went on
looking for the old name took every decode step for a new prefill and generated wrong
tokens without an error. So :func:`check` looks, in the model it is given, for every
seam the engine uses and refuses with :class:`SeamError` (naming the seam, the
installed transformers and the tested range) when one is missing; with every seam
present but transformers outside :data:`TESTED_TRANSFORMERS` it warns once.

What is checked (``check``) and where the engine uses it:

    text model        .layers (decoder layers), .norm (DART's final-norm states)
    model.forward     input_ids, attention_mask, a cache argument, the family's grid inputs
    decoder layer     forward(hidden_states, attention_mask, position_embeddings): the engine
                      swaps these in the pre-hooks of layers >= K
    attention (K-1)   q_proj, k_proj, head_dim, scaling, forward(hidden_states,
                      position_embeddings): rotary keys / FastV's queries are recomputed
    create_causal_mask  config, inputs_embeds, attention_mask, its cache argument, layer_idx:
                      the masks of layers >= K are built for the kept sequence
    text config       every layer full attention (only full causal masks are rebuilt)
    generation        a dynamic KV cache (static / offloaded caches are refused)

The cache itself is found by type (:func:`find_cache`), never by the name of the
keyword that carries it, and passed to ``create_causal_mask`` under the name its
signature has (:meth:`Seams.causal_mask`).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from dataclasses import dataclass

import torch
import transformers
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from torch import nn
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask

# The transformers releases the engine and pipeline tests pass on: the lowest is checked
# by `make test-transformers TRANSFORMERS=<version>`, the newest by the lock; pyproject.toml
# states the same range (a test compares them).
TESTED_TRANSFORMERS = SpecifierSet(">=5.17,<5.25")

# Names transformers has given the KV-cache argument (5.24: ``cache``; before: ``past_key_values``).
_CACHE_ARGS = ("cache", "past_key_values")
_EMBEDS_ARGS = ("inputs_embeds", "input_embeds")


class SeamError(ValueError):
    """A transformers internal the pruning engine needs is missing or has changed."""


def refuse(seam: str, found: str) -> SeamError:
    return SeamError(
        f"pruning cannot run on this model: {seam} ({found}). Installed transformers "
        f"{transformers.__version__}; the engine is tested with transformers{TESTED_TRANSFORMERS} "
        f"(install the project's lock: pip install -r requirements.lock)")


def _parameters(fn) -> list[str]:
    return [name for name, p in inspect.signature(fn).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _require(where: str, fn, names: tuple[str, ...]) -> list[str]:
    params = _parameters(fn)
    missing = [n for n in names if n not in params]
    if missing:
        raise refuse(f"{where} takes no {', '.join(missing)}", f"its arguments: {', '.join(params)}")
    return params


def _one_of(where: str, params: list[str], names: tuple[str, ...]) -> str:
    for name in names:
        if name in params:
            return name
    raise refuse(f"{where} has no {' / '.join(names)} argument", f"its arguments: {', '.join(params)}")


@dataclass(frozen=True)
class Seams:
    """What :func:`check` found: how to call ``create_causal_mask`` in this release."""

    mask_embeds_arg: str  # inputs_embeds (input_embeds before 5.x)
    mask_cache_arg: str   # cache (5.24) or past_key_values

    def causal_mask(self, text_config, hidden: torch.Tensor, mask_2d: torch.Tensor,
                    cache: Cache | None, layer_idx: int):
        """The mask layer ``layer_idx`` uses for ``hidden`` (B, S', D) over the 2-D padding
        mask ``mask_2d`` (B, past + S'), sized from that layer's own cache length."""
        return create_causal_mask(**{
            "config": text_config, self.mask_embeds_arg: hidden,
            "attention_mask": mask_2d.to(torch.long), self.mask_cache_arg: cache,
            "position_ids": None, "layer_idx": layer_idx})


def rotary_tables(kwargs: dict, seq_len: int, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (cos, sin) a decoder layer or attention is given, each (B or 1, S, head_dim):
    the engine gathers them along S and recomputes rotary keys with them. (Before
    transformers 5.17 Qwen's were (3, B, S, d), with the M-RoPE sections split inside the
    attention.)"""
    tables = kwargs.get("position_embeddings")
    if not (isinstance(tables, (tuple, list)) and len(tables) == 2 and
            all(isinstance(t, torch.Tensor) and t.dim() == 3 and t.shape[1] == seq_len for t in tables)):
        shapes = ([tuple(t.shape) for t in tables if isinstance(t, torch.Tensor)]
                  if isinstance(tables, (tuple, list)) else type(tables).__name__)
        raise refuse(f"{where} must be given position_embeddings=(cos, sin) of shape "
                      f"(B, {seq_len}, head_dim)", f"got {shapes}")
    return tables


def find_cache(args: tuple, kwargs: dict) -> Cache | None:
    """The KV cache among a forward's arguments, found by type; refuses caches the engine
    cannot shorten (the layers >= K of a pruned sequence hold fewer positions)."""
    for value in (*kwargs.values(), *args):
        if isinstance(value, Cache):
            if not isinstance(value, DynamicCache):
                raise refuse("pruning needs a DynamicCache", f"got {type(value).__name__}")
            return value
    return None


def check(model: nn.Module, family, text: nn.Module, layer: int) -> Seams:
    """Every seam the engine needs to prune ``model`` before decoder ``layer``; raises
    :class:`SeamError` naming the first one missing, warns once outside the tested range."""
    name = type(model).__name__
    layers = getattr(text, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        raise refuse(f"{type(text).__name__} has no .layers list of decoder layers", name)
    if not isinstance(getattr(text, "norm", None), nn.Module):
        raise refuse(f"{type(text).__name__} has no final .norm", name)

    params = _require(f"{name}.forward", model.forward, ("input_ids", "attention_mask", *family.input_names))
    _one_of(f"{name}.forward", params, _CACHE_ARGS)
    for i in range(max(layer - 1, 0), len(layers)):
        decoder = layers[i]
        _require(f"decoder layer {i} ({type(decoder).__name__}).forward", decoder.forward,
                 ("hidden_states", "attention_mask", "position_embeddings"))
    if 1 <= layer <= len(layers):  # (a layer outside the model is refused by PruningConfig.validate)
        attn = getattr(layers[layer - 1], "self_attn", None)
        if attn is None:
            raise refuse(f"decoder layer {layer - 1} has no .self_attn", type(layers[layer - 1]).__name__)
        missing = [a for a in ("q_proj", "k_proj", "head_dim", "scaling") if not hasattr(attn, a)]
        if missing:
            raise refuse(f"attention of layer {layer - 1} ({type(attn).__name__}) has no "
                          f"{', '.join(missing)}", "rotary keys are recomputed from them")
        _require(f"attention of layer {layer - 1} ({type(attn).__name__}).forward", attn.forward,
                 ("hidden_states", "position_embeddings"))

    mask_params = _require("transformers.masking_utils.create_causal_mask", create_causal_mask,
                           ("config", "attention_mask", "layer_idx"))
    seams = Seams(_one_of("create_causal_mask", mask_params, _EMBEDS_ARGS),
                  _one_of("create_causal_mask", mask_params, _CACHE_ARGS))

    kinds = set(getattr(text.config, "layer_types", None) or ["full_attention"])
    if kinds != {"full_attention"}:
        raise refuse("every decoder layer must use full attention", f"layer_types: {sorted(kinds)}")
    implementation = getattr(getattr(model, "generation_config", None), "cache_implementation", None)
    if implementation not in (None, "dynamic"):
        raise refuse("pruning needs a dynamic KV cache",
                      f"generation_config.cache_implementation={implementation!r}")
    _warn_if_untested(transformers.__version__)
    return seams


@functools.cache
def _warn_if_untested(version: str) -> None:
    if Version(version) not in TESTED_TRANSFORMERS:
        warnings.warn(
            f"transformers {version} is outside the range pruning is tested with "
            f"(transformers{TESTED_TRANSFORMERS}); every seam the engine needs is present, but "
            f"check the results (`make test-transformers TRANSFORMERS={version}`)", stacklevel=3)
