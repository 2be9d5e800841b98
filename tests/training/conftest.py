"""Training tests: torch on one thread (tiny tensors run faster, and shared CPUs stay usable)."""
import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
