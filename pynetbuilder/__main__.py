"""``python -m pynetbuilder`` is the ``pynetbuilder`` command."""

import sys

from pynetbuilder.commands import main

sys.exit(main())
