"""How local workers share the machine's cores."""
from harness.worker.processes import threads_per_worker


def test_threads_split_the_cores():
    assert [threads_per_worker(n, cores=8) for n in (1, 2, 3, 16)] == [8, 4, 2, 1]
