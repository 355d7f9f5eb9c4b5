"""SageMakerEncoder builds its sagemaker-runtime client for the region the environment names.

botocore reads the region from AWS_DEFAULT_REGION or the config file only
(botocore/configprovider.py: `'region': ('region', 'AWS_DEFAULT_REGION', None, None)`), and
sagemaker-runtime has no partition endpoint, so a client made with only AWS_REGION set raised
NoRegionError (botocore/regions.py). Runs against moto over HTTP with no default region anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import numpy as np
import pytest
import requests
from botocore.exceptions import NoRegionError

from mediasearch.query.encoder import SageMakerEncoder


@pytest.fixture
def only_aws_region(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # No ~/.aws/config either: the region must come from AWS_REGION alone.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    return moto_endpoint


def test_a_plain_client_has_no_region_with_only_aws_region(only_aws_region: str) -> None:
    """The premise: what the encoder did before (boto3.client("sagemaker-runtime"))."""
    with pytest.raises(NoRegionError):
        boto3.client("sagemaker-runtime")


def test_encoder_uses_aws_region(only_aws_region: str) -> None:
    embedding = [0.6, 0.8, 0.0]
    # moto answers invoke_endpoint from a queue kept per region: only an eu-west-1 client gets this.
    requests.post(
        f"{only_aws_region}/moto-api/static/sagemaker/endpoint-results",
        json={
            "region": "eu-west-1",
            "results": [
                {
                    "Body": json.dumps({"model": "clip", "embeddings": [embedding]}),
                    "ContentType": "application/json",
                    "InvokedProductionVariant": "AllTraffic",
                    "CustomAttributes": "",
                }
            ],
        },
        timeout=10,
    ).raise_for_status()
    encoder = SageMakerEncoder("mediasearch-clip")
    assert encoder.client.meta.region_name == "eu-west-1"
    np.testing.assert_allclose(encoder.encode_text("a red square"), embedding, atol=1e-6)


def test_encoder_still_uses_aws_default_region_alone(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-southeast-2")
    assert SageMakerEncoder("e").client.meta.region_name == "ap-southeast-2"
