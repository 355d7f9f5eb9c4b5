# The query Lambda (container image): FastAPI under Mangum, query encoding on the SageMaker endpoint,
# OpenSearch over SigV4. Build from the repository root for the function's architecture (x86_64):
#   docker build --platform linux/amd64 --provenance=false -f docker/lambda.Dockerfile -t mediasearch-query .
FROM public.ecr.aws/lambda/python:3.12

# No transformers, LanceDB or video stack: the model lives on the endpoint and the index is
# OpenSearch. torch (CPU wheel) stays only because mediasearch.query.encoder imports the CLIP module.
COPY query_lambda/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --target "${LAMBDA_TASK_ROOT}" \
        --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple \
        "torch>=2.4" -r /tmp/requirements.txt

# The package without its dependency list (which would pull the batch-side libraries back in).
COPY pyproject.toml README.md /tmp/src/
COPY mediasearch /tmp/src/mediasearch
RUN pip install --no-cache-dir --no-deps /tmp/src --target "${LAMBDA_TASK_ROOT}" && rm -rf /tmp/src

COPY query_lambda ${LAMBDA_TASK_ROOT}/query_lambda
CMD ["query_lambda.handler.handler"]
