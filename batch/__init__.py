"""Batch scoring: the third serving path, offline on Beam; it never touches the online server."""
