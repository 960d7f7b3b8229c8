"""Print pyproject.toml's dependencies (and the test extra) with every version bound
dropped: what the canary (`make test-latest`) installs, so that pip picks the newest
release of each, including those past the project's tested upper bounds. Packages the
lock installs without their dependencies (tool.uv.dependency-metadata: lmms-eval, for
tests/conformance, which the canary does not run) are left out: pip would pull in their
whole dependency trees and move the versions the canary is there to test."""

import re
import tomllib
from pathlib import Path

pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
project = pyproject["project"]
without_deps = {m["name"] for m in pyproject.get("tool", {}).get("uv", {}).get("dependency-metadata", [])}
for line in project["dependencies"] + project["optional-dependencies"]["test"]:
    name_and_extras = re.match(r"\s*[A-Za-z0-9._-]+(\[[^\]]*\])?", line).group(0)
    if re.split(r"\[", name_and_extras.strip())[0] in without_deps:
        continue
    marker = line.partition(";")[2].strip()
    print(name_and_extras.strip() + (f"; {marker}" if marker else ""))
