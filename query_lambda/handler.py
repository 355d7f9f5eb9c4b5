"""Lambda entry point (container image): the same FastAPI app as `mediasearch serve`, under Mangum.

Thin on purpose. On AWS the function's environment selects the backends (see infra/template.yaml):
MEDIASEARCH_INDEX_BACKEND=opensearch with MEDIASEARCH_OPENSEARCH_AWS_REGION (SigV4), and either

- MEDIASEARCH_ENCODER_BACKEND=sagemaker with MEDIASEARCH_SAGEMAKER_ENDPOINT: the image holds no model;
- MEDIASEARCH_ENCODER_BACKEND=local with MEDIASEARCH_CLIP_MODEL pointing at an ONNX export folder baked
  into the image (docker/lambda.Dockerfile): queries are encoded here by ONNX Runtime, no endpoint.

The app is built at import time, so Lambda's init phase (not the first request) pays for it, and with
the encoder in the function its text tower is loaded then too.
"""

from __future__ import annotations

import logging

from mangum import Mangum

from mediasearch.core.settings import EncoderBackend, get_settings
from mediasearch.query.api import create_app

log = logging.getLogger("mediasearch.lambda")

app = create_app()
if get_settings().encoder_backend is EncoderBackend.LOCAL:
    # Lambda has no ASGI lifespan to warm up in (below). Loading here keeps it out of the first request;
    # failing here (e.g. the cluster unreachable while the serving generation is looked up) must not
    # fail the init: the first query then retries and reports the error as a response.
    try:
        app.state.service.warm_up()
    except Exception:
        log.warning("warm-up failed; the first query loads the model", exc_info=True)

# Lambda has no ASGI lifespan to run; "off" spares every cold start the startup handshake.
handler = Mangum(app, lifespan="off")
