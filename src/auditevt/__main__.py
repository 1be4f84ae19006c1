"""``python -m auditevt``: the same command line as ``auditevt``."""

import sys

from auditevt._cli import main

if __name__ == "__main__":
    sys.exit(main())
