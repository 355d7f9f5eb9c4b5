"""mediasearch: semantic search over images and videos.

The library holds all logic; `model_handlers/`, `jobs/` and `query_lambda/` only wire it up.
"""

__version__ = "0.1.0"
