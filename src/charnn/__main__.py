"""`python -m charnn` runs the command line."""

import sys

from charnn.cli import main

sys.exit(main())
