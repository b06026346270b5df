"""`python -m fastdet`: the `fastdet` command."""

import sys

from fastdet.tools.cli import main

sys.exit(main())
