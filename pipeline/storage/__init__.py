"""All file access (fsspec / pyarrow filesystems) and the output folder's exactly-once commits."""
