"""`python -m mmp_core.cli ...` (what torchrun and the deepspeed launcher's --module run): the `mmp` command."""

import sys

from mmp_core.cli.app import main

sys.exit(main())
