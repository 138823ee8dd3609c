"""The writer's tools: drafts, preview, check."""
