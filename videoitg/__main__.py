import sys

from videoitg.cli import main

sys.exit(main())
