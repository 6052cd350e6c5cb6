"""The embedded default: the sample corpus and its demo model."""
