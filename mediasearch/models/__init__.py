"""Model classes: each loads lazily from a hub id or a local directory and predicts in batches."""
