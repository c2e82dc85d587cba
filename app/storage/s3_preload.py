"""Imported by a job's fork server alone (app/forkserver.py), when the job's storage is S3: boto3 and
S3's service model are loaded there once, so each worker forked from it imports nothing more and makes
its client in milliseconds (the first client of a process costs ~75 ms of CPU, boto3's import ~110 ms).
Loading the model reads botocore's data files: that is this module's whole purpose."""

from app.storage import s3

s3.warm_up()
