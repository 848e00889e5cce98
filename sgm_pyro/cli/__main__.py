"""``python -m sgm_pyro.cli``: the ``sgm`` command."""

import sys

from . import main

sys.exit(main())
