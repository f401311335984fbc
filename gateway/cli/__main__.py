"""`python -m gateway.cli`: the `ironwatt` command without its console script."""

import sys

from gateway.cli.main import main

sys.exit(main())
