"""Lambda entry point (container image): the same FastAPI app as `mediasearch serve`, under Mangum.

Thin on purpose. On AWS the function's environment selects the backends (see infra/template.yaml):
MEDIASEARCH_INDEX_BACKEND=opensearch with MEDIASEARCH_OPENSEARCH_AWS_REGION (SigV4), and
MEDIASEARCH_ENCODER_BACKEND=sagemaker with MEDIASEARCH_SAGEMAKER_ENDPOINT, so the image holds no model.
The app is built at import time, so Lambda's init phase (not the first request) pays for it.
"""

from __future__ import annotations

from mangum import Mangum

from mediasearch.query.api import create_app

# Lambda has no ASGI lifespan to run; "off" spares every cold start the startup handshake.
handler = Mangum(create_app(), lifespan="off")
