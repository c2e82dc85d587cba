from tests.support.cluster import cluster, redis_server  # noqa: F401
