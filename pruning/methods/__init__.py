"""Selection methods, one module each, registered by name (see ``registry``).

Every module of this package is imported here, and importing a module registers its
method: adding a method is adding a file.
"""

import importlib
import pkgutil

from pruning.methods.registry import MethodSpec, Param, Selection, get_method, list_methods, register

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["MethodSpec", "Param", "Selection", "get_method", "list_methods", "register"]
