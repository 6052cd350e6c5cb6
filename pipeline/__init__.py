"""Batch NER and embeddings with biomedical encoders on Ray Data."""
