"""The pretraining runtime: data, batches, the trainer and its loop, what a run writes (torch)."""
