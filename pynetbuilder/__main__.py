"""``python -m pynetbuilder`` is the ``pynetbuilder`` command: it runs the command-line
package (``pynetbuilder.commands``) as its main program.  The library itself never
imports the command line."""

import runpy

runpy.run_module("pynetbuilder.commands", run_name="__main__", alter_sys=True)
