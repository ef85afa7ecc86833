"""``python -m pynetbuilder.commands``: the ``pynetbuilder`` command."""

import sys

from pynetbuilder.commands import main

sys.exit(main())
