"""Schemas: the curated taxi schema (`taxi/schema.pbtxt`) and `infer` for a new dataset."""
