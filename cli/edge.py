"""`tfx-edge edge`: the device runtime's own command line (`python -m edge` on a device).

Devices get only `edge/` and a version directory, so the device CLI lives there
(`edge/device_cli.py`, numpy and a TFLite interpreter, no TensorFlow); this group
is that same command, so both read and behave alike.
"""

from edge.device_cli import build_parser, main

__all__ = ["build_parser", "main"]
