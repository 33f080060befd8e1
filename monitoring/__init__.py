"""Monitoring after a model ships: the per-window series of its traffic, late labels, exporter."""
