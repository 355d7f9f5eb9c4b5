"""The torch-free core both sides share: records and wire formats, settings, storage, image decoding,
vector helpers and the work-area layout.

Nothing here imports torch, transformers, lancedb or boto3 at module level, so the query side (and the
query Lambda) can be built on it without the model stack.
"""
