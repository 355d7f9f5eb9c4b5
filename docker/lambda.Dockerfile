# The query Lambda (container image): FastAPI under Mangum, OpenSearch over SigV4, and query encoding on
# the SageMaker endpoint, or here by ONNX Runtime on an export baked into the image (see CLIP_ONNX below).
# Build from the repository root for the function's architecture (x86_64):
#   docker build --platform linux/amd64 --provenance=false -f docker/lambda.Dockerfile -t mediasearch-query .
FROM public.ecr.aws/lambda/python:3.12

# No torch, transformers, LanceDB or video stack: the index is OpenSearch, and the query side imports the
# model stack only to build a PyTorch model. What this adds to the base image (pip install --target of
# these requirements and the package, CPython 3.12 x86_64 wheels): 294 MiB, of which ONNX Runtime and
# tokenizers with their dependencies 121 (query_lambda/requirements.txt itemises it); with torch 2.13.0
# instead (CPU wheel: 754 MiB, plus sympy and networkx) it was 1055 MiB.
COPY query_lambda/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --target "${LAMBDA_TASK_ROOT}" -r /tmp/requirements.txt

# The package without its dependency list (which would pull the batch-side libraries back in).
COPY pyproject.toml README.md /tmp/src/
COPY mediasearch /tmp/src/mediasearch
RUN pip install --no-cache-dir --no-deps /tmp/src --target "${LAMBDA_TASK_ROOT}" && rm -rf /tmp/src

# In-function query encoding: an ONNX export folder (`mediasearch export-onnx` prints where it is) copied
# into the build context and named here, e.g. --build-arg CLIP_ONNX=build/clip-onnx; then set the
# function's MEDIASEARCH_ENCODER_BACKEND=local and MEDIASEARCH_CLIP_MODEL=/opt/clip-onnx. By default an
# empty folder is copied and queries go to the SageMaker endpoint.
ARG CLIP_ONNX=docker/no-model
COPY ${CLIP_ONNX} /opt/clip-onnx

COPY query_lambda ${LAMBDA_TASK_ROOT}/query_lambda
CMD ["query_lambda.handler.handler"]
