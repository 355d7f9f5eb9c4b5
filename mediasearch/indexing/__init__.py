"""The index-time side: video preprocessing, manifests, the batch-transform handler and runner, the
loader, and `pipeline.ingest`, the one orchestration the CLI, `jobs/` and the `aws` commands share."""
