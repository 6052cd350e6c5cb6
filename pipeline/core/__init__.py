"""Pure functions over arrays and offsets: windows, span decoding, pooling, token-budget
batching, repeated ids. No Ray, no torch, nothing else of the project."""
