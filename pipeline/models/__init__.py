"""Model sources, the local cache, loading, per-family defaults, pulling a model to a bucket."""
