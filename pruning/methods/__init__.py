"""Selection methods, one module each, registered by name (see ``registry``)."""

from pruning.methods.registry import MethodSpec, Param, Selection, get_method, list_methods, register

# Importing a module registers its method.
from pruning.methods import dart, divprune, fastv, random, uniform, vlm_pruner  # noqa: E402,F401

__all__ = ["MethodSpec", "Param", "Selection", "get_method", "list_methods", "register"]
