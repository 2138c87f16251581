import sys

from videoitg.commands.cli import main

sys.exit(main())
