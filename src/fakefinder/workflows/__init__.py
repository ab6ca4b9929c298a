"""Whole studies built from the stages: the cross-dataset study and the built-in demo."""
