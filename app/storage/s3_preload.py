"""Imported by a job's fork server alone (app/forkserver.py), when the job's storage is S3: botocore and
S3's service model are loaded there once, so each worker forked from it imports nothing more and makes
its client in milliseconds (the first client of a process costs ~75 ms of CPU, botocore's import ~90 ms).
Loading the model reads botocore's data files: that is this module's whole purpose."""

from app.storage import s3

s3.warm_up()
