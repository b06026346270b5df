"""`python -m fastdet`: the `fastdet` command."""

import sys

from fastdet.cli import main

sys.exit(main())
