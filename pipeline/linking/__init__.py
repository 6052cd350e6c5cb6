"""Concept linking: dictionaries, their vector and n-gram indexes, retrieval."""
