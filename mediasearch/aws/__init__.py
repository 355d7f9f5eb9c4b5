"""AWS deployment: model artefacts for SageMaker, the batch-transform launcher and the `aws` CLI group.

Everything here talks to AWS through plain boto3 clients built by `clients.client`, which honours
AWS_ENDPOINT_URL, so the same code runs against moto (tests) and LocalStack.
"""
