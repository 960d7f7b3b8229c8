"""Print pyproject.toml's dependencies (and the test extra) with every version bound
dropped: what the canary (`make test-latest`) installs, so that pip picks the newest
release of each, including those past the project's tested upper bounds."""

import re
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
for line in project["dependencies"] + project["optional-dependencies"]["test"]:
    name_and_extras = re.match(r"\s*[A-Za-z0-9._-]+(\[[^\]]*\])?", line).group(0)
    marker = line.partition(";")[2].strip()
    print(name_and_extras.strip() + (f"; {marker}" if marker else ""))
