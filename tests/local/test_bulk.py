"""clouds/local/bulk.py: the stand-in's multi-GB payload (small here): its shape, its layers, the
start reads, the cache; and the stand-in image that carries it (clouds/local/standin.py)."""
from __future__ import annotations

import gzip
import shutil
import subprocess
import hashlib
import io
import json
import tarfile

import pytest

from clouds.local import bulk, standin
from core.errors import PipelineError
from tests.local.test_standin import needs_unshare, in_container

SHAPE = bulk.Shape(mib=8, layers=2, files=40, start_mib=3)


def sha_file(path, opener=open) -> str:
    with opener(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def test_the_plan_spreads_the_bytes_and_files_as_asked():
    layers = bulk.plan(SHAPE)
    files = [f for layer in layers for f in layer]
    assert len(layers) == 2 and len(files) == 40
    total, start = sum(s for _, s, _ in files), sum(s for _, s, read in files if read)
    assert abs(total - (8 << 20)) < (8 << 20) * 0.1, total
    assert abs(start - (3 << 20)) < (3 << 20) * 0.1, start
    libs = [f for f in files if f[0].endswith(".so")]
    assert len(libs) == 2 and all(read for _, _, read in libs)          # one library per layer, read at start
    assert not any(read for p, _, read in files if p.endswith(".a"))       # the rest is not read at start
    assert bulk.plan(SHAPE) == layers                                      # deterministic


@pytest.mark.parametrize("shape, words", [
    (bulk.Shape(mib=8, layers=2, files=40, start_mib=9), "start_mib <= mib"),
    (bulk.Shape(mib=8, layers=4, files=5, start_mib=1), "at least 12"),
    (bulk.Shape(mib=-1), "mib >= 0"),
])
def test_a_bad_shape_is_a_clear_error(shape, words, tmp_path):
    with pytest.raises(PipelineError, match=words):
        bulk.build(shape, tmp_path)
    assert not list(tmp_path.iterdir())


def test_layers_are_gzipped_tars_named_by_digest_and_cached(tmp_path):
    made = bulk.build(SHAPE, tmp_path)
    assert len(made.layers) == 2
    for layer in made.layers:
        assert layer.path.name == layer.digest.split(":")[1] and sha_file(layer.path) == layer.digest
        assert sha_file(layer.path, gzip.open) == layer.diff_id and layer.path.stat().st_size == layer.size
        with tarfile.open(layer.path, "r:gz") as tar:
            names = {m.name: m for m in tar.getmembers()}
        assert all(m.mtime == 0 and m.uid == 0 for m in names.values())
    raw = gzip.decompress(made.layers[0].path.read_bytes())
    ratio = len(raw) / made.layers[0].size
    assert ratio > 1.5 and ratio < 3, ratio                  # compresses about 2:1, as image layers do
    # Modules first, then the libraries, as a start imports them.
    kinds = [p.endswith(".so") for p in made.start_reads]
    assert kinds == sorted(kinds) and sum(kinds) == 2
    stamps = [layer.path.stat().st_mtime_ns for layer in made.layers]
    again = bulk.build(SHAPE, tmp_path)
    assert again == made and [layer.path.stat().st_mtime_ns for layer in again.layers] == stamps
    assert not list(tmp_path.glob(".*partial"))
    # Another machine makes the same bytes.
    assert bulk.build(SHAPE, tmp_path / "elsewhere").layers == tuple(
        bulk.BulkLayer(tmp_path / "elsewhere" / l.path.name, l.digest, l.diff_id, l.size) for l in made.layers)


def test_a_broken_cache_entry_is_made_again(tmp_path):
    made = bulk.build(SHAPE, tmp_path)
    made.layers[1].path.write_bytes(b"truncated")
    again = bulk.build(SHAPE, tmp_path)
    assert sha_file(again.layers[1].path) == made.layers[1].digest


@pytest.fixture(scope="module")
def heavy(tmp_path_factory) -> standin.StandinImage:
    return standin.build_standin(tmp_path_factory.mktemp("heavy"), payload=SHAPE)


def test_the_stand_in_carries_the_payload_after_its_own_layer(heavy):
    manifest, config = json.loads(heavy.manifest), json.loads(heavy.config)
    assert [l["digest"] for l in manifest["layers"]] == list(heavy.layer_digests)
    assert len(heavy.layer_digests) == 1 + SHAPE.layers
    assert config["rootfs"]["diff_ids"][1:] == [l.diff_id for l in heavy.bulk]
    assert heavy.digest != standin.build_standin().digest
    # The layout holds every blob; a payload needs a place on disk.
    assert {p.name for p in heavy.layout.iterdir()} >= {d.split(":")[1] for d in heavy.layer_digests}
    with pytest.raises(PipelineError, match="out_dir"):
        standin.build_standin(payload=SHAPE)


def test_the_start_list_is_in_the_first_layer(heavy):
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(heavy.layers[0]))) as tar:
        listed = tar.extractfile(bulk.START_LIST).read().decode().split()
    made = bulk.build(SHAPE, heavy.layout)
    assert tuple(listed) == made.start_reads and all(p.startswith("/") for p in listed)


@needs_unshare
def test_a_command_reads_the_start_list_first_and_still_runs(heavy, tmp_path):
    first = bulk.build(SHAPE, heavy.layout).start_reads[0]
    out = in_container(heavy, tmp_path, f"""\
        rm $R{first}
        (ctr /bin/sh -c 'echo == ran') 2>&1; echo "== rc $?"
        (ctr) 2>&1 | grep -c "can't open" ; true
        """)
    assert f"can't open '{first}'" in out and "== ran" in out and "== rc 0" in out, out
    assert out.rstrip().endswith("0"), out          # without a command (a shell) nothing is read


@pytest.mark.skipif(not shutil.which("skopeo") or not shutil.which("docker-registry"),
                    reason="apt-get install docker-registry skopeo")
def test_push_streams_the_payload_and_skopeo_sees_every_layer(heavy, tmp_path):
    from clouds.local import registry
    from tests.local.test_registry import free_port
    with registry.LocalRegistry(tmp_path / "registry", free_port(), tmp_path / "registry.log") as reg:
        assert standin.push(heavy, reg.address, "clara/heavy", "v1") == heavy.digest
        info = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                                          f"docker://{reg.address}/clara/heavy:v1"],
                                         capture_output=True, text=True, check=True, timeout=120).stdout)
    assert info["Digest"] == heavy.digest and tuple(info["Layers"]) == heavy.layer_digests
