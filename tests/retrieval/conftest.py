"""faiss on one thread in tests: OpenMP spin-waiting on a shared, busy CPU makes the small
k-means runs here many times slower, and single-threaded results are reproducible."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _faiss_single_thread():
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
