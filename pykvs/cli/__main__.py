"""``python -m pykvs.cli ...``: the ``pykvs`` command."""

import sys

from pykvs.cli import main

sys.exit(main())
