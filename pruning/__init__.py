"""Training-free visual token pruning: selection methods and their wiring into VLMs."""

from pruning.methods import Selection, get_method, list_methods

__all__ = ["Selection", "get_method", "list_methods"]
