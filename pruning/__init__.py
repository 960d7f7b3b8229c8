"""Training-free visual token pruning: selection methods and their wiring into VLMs.

    import pruning
    with pruning.apply(model, pruning.PruningConfig(method="vlm_pruner", pruning_rate=0.889)):
        model.generate(**inputs)
"""

from pruning.config import PruningConfig
from pruning.engine import CallStats, PruningHandle, SpanStats, apply
from pruning.seams import SeamError
from pruning.methods import Selection, get_method, list_methods

__all__ = ["CallStats", "PruningConfig", "PruningHandle", "SeamError", "Selection", "SpanStats", "apply",
           "get_method", "list_methods"]
