"""The coordinator process: source intake, routing, watermarks, merge of shard state."""
