"""`python -m cli ...` is `tfx-edge ...` (for a Python that has the project but no `tfx-edge` on PATH)."""

import sys

from cli.main import main

sys.exit(main())
