"""`python -m edge` on a device (only `edge/` and a version directory are copied there): the device CLI."""

import sys

from edge.device_cli import main

if __name__ == "__main__":
    sys.exit(main())
