"""Print the versions of the packages whose releases change what the project computes,
and whether transformers is inside the range the pruning engine is tested with."""

from importlib.metadata import PackageNotFoundError, version

from pruning.seams import TESTED_TRANSFORMERS

PACKAGES = ("transformers", "torch", "torchvision", "tokenizers", "huggingface-hub", "ray",
            "mlflow", "datasets", "numpy", "numba", "pyarrow", "av", "decord")

for name in PACKAGES:
    try:
        print(f"{name:16} {version(name)}")
    except PackageNotFoundError:
        print(f"{name:16} not installed")
inside = version("transformers") in TESTED_TRANSFORMERS
print(f"transformers {version('transformers')} is {'inside' if inside else 'OUTSIDE'} the tested "
      f"range transformers{TESTED_TRANSFORMERS}")
