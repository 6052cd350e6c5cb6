"""Fine-tuning on Ray Train and the span-to-token alignment it needs."""
