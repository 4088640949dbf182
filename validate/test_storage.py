"""Where the pre-pulled images really are: on the data-root's filesystem, whatever the image store.

DockerRootDir alone proves nothing with Docker 29's containerd image store: the layers then live
under containerd's root (/var/lib/containerd by default), which `data-root` does not move
(https://docs.docker.com/engine/daemon/#configure-the-data-directory-location, moby#50517). These
checks find the folder the layers are in, prove the image's layers are there, and that it is on
the same filesystem as the configured data-root and not on ephemeral storage.
"""

from __future__ import annotations

import shlex

from validate import checks, storage
from validate.remote import explain, require


def _layer_dir(remote, engine: storage.Engine) -> str:
    return storage.layer_dir_on(remote, engine)


def _mounts(remote, *paths: str) -> list[str]:
    r = remote.root("df --output=target " + " ".join(shlex.quote(p) for p in paths))
    require(r.rc == 0, f"cannot find the filesystems of {', '.join(paths)}: {explain(r)}")
    return storage.df_targets(r.stdout, len(paths))


def test_image_layers_live_on_the_data_root(remote, expect, expected_image):
    ref = expected_image.get("ref")
    want = expect.get("data_root", "/var/lib/docker")
    engine = storage.engine(remote.docker_info())
    layers = _layer_dir(remote, engine)
    where = f"{engine.describe()}, layers in {layers}"
    # The local target knows its base's store (clouds.local.base); a cloud's base decides its own.
    store = expect.get("image_store")
    if store:
        got = "containerd" if engine.containerd_store else "classic"
        require(got == store, f"the engine keeps images in the {engine.describe()}, but the base image was "
                              f"made for Docker's {store} image store ({where})")

    image = remote.image(ref)
    require(image, f"image {ref} not found")
    size = int(image.get("Size") or 0)
    if not engine.containerd_store:
        # The classic drivers name the image's layer folders; the containerd store does not expose them.
        paths = storage.graph_paths((image.get("GraphDriver") or {}).get("Data"))
        outside = [p for p in paths if not p.startswith(layers.rstrip("/") + "/")]
        require(paths and not outside, f"image {ref}: layer folders {outside or paths} are not under {layers} ({where})")
    r = remote.root(f"timeout 600 du -sx --block-size=1 {shlex.quote(layers)}")
    require(r.rc == 0, f"cannot measure {layers} ({where}): {explain(r)}")
    used = storage.du_bytes(r.stdout)
    # The unpacked image must be in there; half leaves room for du's and Size's different counting.
    require(used * 2 >= size, f"{layers} holds {used} bytes but image {ref} is {size} bytes unpacked: "
                              f"its layers are elsewhere ({where})")

    have, need = _mounts(remote, layers, want)
    require(have == need, f"image layers are on the filesystem mounted at {have} ({where}), but the "
                          f"data-root {want} is on {need}: data_root did not move the images")
    ephemeral = list(expect.get("ephemeral_paths") or ())
    for label, path in (("layer folder", layers), ("its mount", have)):
        hit = path != "/" and checks.is_under(path, ephemeral)
        require(not hit, f"image {label} {path!r} is on ephemeral storage ({hit}): pre-pulled images "
                         "would be lost on stop/start")
