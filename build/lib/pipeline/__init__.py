"""Pipeline definition: configuration (`config.py`), inputs (`inputs.py`), wiring (`pipeline.py`)."""
