"""`python -m cloud`: the same as the `ocpp-cloud` command."""

import sys

from cloud.cli import main

sys.exit(main())
