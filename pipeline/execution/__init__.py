"""The run's plan (models, shards, fingerprint), its Ray Data graph, batch sizing and run.json."""
