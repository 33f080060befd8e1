"""What every stage agrees on: the settings, the serving contract, version directories, error types.

The bottom layer: it imports nothing else of the project and no TensorFlow, so
clients, the edge runtime and command lines can use it cheaply.
"""
