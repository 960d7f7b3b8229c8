"""Make the virtual environment DIR see this interpreter's packages behind its own:
`make test-transformers` installs another transformers (and what it needs) into a small
DIR layered over .venv, instead of building a second multi-GB environment.

    .venv/bin/python .ci/layer_venv.py .venv-tf
"""

import subprocess
import sys
import sysconfig
from pathlib import Path

target = Path(sys.argv[1])
purelib = subprocess.run([target / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True).stdout.strip()
# A .pth line starting with "import" runs at start-up; addsitedir also reads the base's own
# .pth files (the editable install of this package). The layer's packages come first.
base = sysconfig.get_paths()["purelib"]
(Path(purelib) / "zz-layered-over.pth").write_text(f"import site; site.addsitedir({base!r})\n")
print(f"{target} layered over {base}")
