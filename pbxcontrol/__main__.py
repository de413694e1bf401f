"""`python -m pbxcontrol` runs the command line."""

import sys

from pbxcontrol.cli import main

sys.exit(main())
