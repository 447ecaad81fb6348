"""The worker process: runs the whole pipeline on its shard of the keys."""
