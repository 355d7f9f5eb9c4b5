"""The query Lambda: the FastAPI app under Mangum (see handler.py)."""
