"""Model code: features, Transform's preprocessing_fn, the Keras model, the tuner.

TFX packages every .py file in this folder into the module wheel it gives
Transform, Tuner and Trainer, and fingerprints them for caching: keep only model
code here, so that unrelated edits do not re-run those components.
"""
