"""Custom TFX components: the steps the stock components do not cover."""
