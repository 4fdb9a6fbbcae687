import pytest


@pytest.fixture
def local_ray():
    """Ray started in this process with two CPUs (the default without --address), shut down afterwards."""
    import ray

    from runtime.distributed import cluster

    ray.shutdown()
    cluster.start(2)
    yield
    ray.shutdown()
