"""bench/torch_reads.py's page-cache residency, on a real file: dropped, then exactly what was read
(its own bytes at least), which is how a PyTorch start's reads are counted."""
import os

from bench import torch_reads


def test_residency_counts_what_was_read_after_an_eviction(tmp_path):
    path = tmp_path / "libtorch_cpu.so"
    path.write_bytes(os.urandom(8 << 20))
    os.sync()                                       # dirty pages are not dropped
    torch_reads.evict([str(path)])
    assert torch_reads.resident(str(path), 8 << 20) == 0
    read = 1 << 20
    with open(path, "rb") as f:
        f.read(read)
    assert read <= torch_reads.resident(str(path), 8 << 20) <= 8 << 20
    assert torch_reads.files(tmp_path) == {str(path): 8 << 20}
    assert [torch_reads.kind(p) for p in ("a/libcudnn.so.9", "m.pyc", "x.py", "README")] == \
        ["library", "module", "module", "other"]
