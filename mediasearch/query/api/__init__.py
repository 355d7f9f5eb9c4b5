"""The HTTP API (FastAPI): the same app runs under uvicorn locally and under Mangum on Lambda.

`create_app` (app.py) assembles it: the request-context middleware (middleware.py), the JSON error
mapping (errors.py), the API key (security.py) and one router per concern (routes/). Routes reach the
search service and the settings through dependencies (deps.py) and call only the service's methods.

Errors are JSON `{error, detail}`; input the caller controls never yields a 500 or a stack trace.
"""

from mediasearch.query.api.app import create_app

__all__ = ["create_app"]
