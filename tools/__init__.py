"""Operator commands (``python -m tools.<name>``)."""
