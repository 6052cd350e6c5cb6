"""Scoring predicted spans against gold spans."""
