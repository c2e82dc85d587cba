"""Celery tasks: thin wrappers that take ids, call app/, and return ids. One module per job family."""
