from tests.support.s3server import s3_bucket_url, s3_endpoint  # noqa: F401
