"""Runners: execute the one pipeline definition locally or in production."""
