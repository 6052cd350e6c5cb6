"""Ray Data stages: callable classes over pyarrow tables."""
