"""The command line: `tfx-edge GROUP COMMAND` (and `python -m cli`), one thin module per group.

Each group module parses its arguments (`build_parser()`), runs the prologue
(`prologue.prepare()`: quiet start-up, Keras 2, before TensorFlow is imported) and
calls the stage's own functions; no behaviour lives here that a stage could not be
called for directly.
"""
