"""``python -m predrecon ...`` (and ``torchrun ... -m predrecon train ...``): the command line."""

import sys

from .cli import main

sys.exit(main())
