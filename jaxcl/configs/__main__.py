"""``python -m jaxcl.configs NAME`` prints the path of a shipped recipe."""

import sys

from jaxcl.configs import NAMES, path

if len(sys.argv) != 2:
    sys.exit(f"usage: python -m jaxcl.configs NAME  (one of {', '.join(NAMES)})")
print(path(sys.argv[1]))
