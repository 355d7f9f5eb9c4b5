# The query Lambda (container image): FastAPI under Mangum, query encoding on the SageMaker endpoint,
# OpenSearch over SigV4. Build from the repository root for the function's architecture (x86_64):
#   docker build --platform linux/amd64 --provenance=false -f docker/lambda.Dockerfile -t mediasearch-query .
FROM public.ecr.aws/lambda/python:3.12

# No torch, transformers, LanceDB or video stack: the model lives on the endpoint, the index is
# OpenSearch, and the query side imports the model stack only to build a local model. What this adds
# to the base image (pip install --target of these requirements and the package, x86_64 wheels):
# 178 MiB, down from 1055 MiB with torch 2.13.0 (CPU wheel: 754 MiB, plus sympy and networkx).
COPY query_lambda/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --target "${LAMBDA_TASK_ROOT}" -r /tmp/requirements.txt

# The package without its dependency list (which would pull the batch-side libraries back in).
COPY pyproject.toml README.md /tmp/src/
COPY mediasearch /tmp/src/mediasearch
RUN pip install --no-cache-dir --no-deps /tmp/src --target "${LAMBDA_TASK_ROOT}" && rm -rf /tmp/src

COPY query_lambda ${LAMBDA_TASK_ROOT}/query_lambda
CMD ["query_lambda.handler.handler"]
