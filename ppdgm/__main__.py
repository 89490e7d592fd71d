"""``python -m ppdgm``: the ``ppdgm`` command (for ``torchrun ... -m ppdgm`` and environments
without the console script)."""

import sys

from ppdgm.cli import main

if __name__ == "__main__":
    sys.exit(main())
