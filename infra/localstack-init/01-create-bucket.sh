#!/usr/bin/env bash
# LocalStack runs the scripts in /etc/localstack/init/ready.d once its services accept requests.
# Creates the media bucket the api and ingest services use; safe to run again (restarts keep state
# when LocalStack persistence is on).
set -euo pipefail

bucket="${MEDIASEARCH_BUCKET:-mediasearch}"
if awslocal s3api head-bucket --bucket "$bucket" >/dev/null 2>&1; then
  echo "bucket s3://$bucket already exists"
else
  awslocal s3 mb "s3://$bucket"
fi
