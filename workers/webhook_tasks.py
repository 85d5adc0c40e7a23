"""Placeholder until this module's tasks land (issue 8, in progress)."""
