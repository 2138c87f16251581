"""`python -m videoitg.front CONFIG_JSON`: the front's process (`main.py`)."""

import sys

from videoitg.front.main import main

sys.exit(main(sys.argv[1:]))
