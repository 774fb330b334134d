"""`python -m mpdiffuser ...` (and `torchrun -m mpdiffuser train ...`): the command line."""

import sys

from mpdiffuser.cli import main

sys.exit(main())
