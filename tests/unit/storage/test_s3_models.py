"""The S3 client's service models: loaded as botocore loads them (the same data, AWS_DATA_PATH first),
without boto3 and without listing every service botocore knows (app/storage/s3.py: _ModelLoader)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.loaders import Loader

from app.storage.s3 import _ModelLoader


def test_an_s3_storage_is_made_without_importing_boto3() -> None:
    statement = (
        "import sys\n"
        "from app.storage.s3 import S3Storage\n"
        "S3Storage('bucket', endpoint_url='http://127.0.0.1:9', region='us-east-1').close()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 's3transfer'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", statement], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("type_name", ["service-2", "endpoint-rule-set-1", "paginators-1"])
def test_the_models_are_those_botocore_loads(type_name: str) -> None:
    ours, botocores = _ModelLoader(None), Loader()
    assert ours.load_service_model("s3", type_name) == botocores.load_service_model("s3", type_name)
    assert ours.load_data("endpoints") == botocores.load_data("endpoints")


def test_services_are_known_by_name() -> None:
    names = _ModelLoader(None).list_available_services("service-2")
    assert "s3" in names and "sts" in names  # sts: an assumed role's credentials make an STS client
    assert "no-such-service" not in names and "../s3" not in names and "" not in names
    assert list(names) == Loader().list_available_services("service-2")  # whole, when iterated
    assert len(names) == len(list(names))


def test_a_model_under_aws_data_path_comes_first(tmp_path: Path) -> None:
    model = Loader().load_service_model("s3", "service-2")
    model["metadata"]["serviceFullName"] = "S3 from AWS_DATA_PATH"
    version = model["metadata"]["apiVersion"]
    (tmp_path / "s3" / version).mkdir(parents=True)
    (tmp_path / "s3" / version / "service-2.json").write_text(json.dumps(model))
    loaded = _ModelLoader(str(tmp_path)).load_service_model("s3", "service-2")
    assert loaded["metadata"]["serviceFullName"] == "S3 from AWS_DATA_PATH"
