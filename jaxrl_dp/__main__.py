"""``python -m jaxrl_dp COMMAND`` (``demo``, ``solve``, ``analyze``, ``bench``; ``--version``)."""

import sys

from jaxrl_dp.cli import main

sys.exit(main())
