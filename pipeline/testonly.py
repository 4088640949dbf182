"""`invoke test --cloud X --image ID`: the validation stage on its own, for an existing image."""
from __future__ import annotations

import json

from clouds.base import Image, adapter as get_adapter
from manifests.fingerprint import fingerprint
from packer.provision_config import provision_config
from packer.sources import target
from publish import record
from validate.expect import expectations

from core import settings

from .bake import new_bake_id
from .report import CloudRun
from .testvm import check_image


def test_existing_image(manifest, cloud: str, image_id: str):
    run = CloudRun(new_bake_id(), cloud, settings.reports_dir())
    adapter = get_adapter(cloud, manifest, log=run.say)
    digests = adapter.pinned_digests()
    # The fingerprint the image was baked with: from the record, else what a bake would compute now.
    entry = next((i for i in record.section(manifest.name, cloud)["images"] if i["id"] == image_id), None)
    fp = entry["fingerprint"] if entry else fingerprint(
        manifest, cloud, base_image=adapter.resolve_base_image().id, digests=digests)
    config = provision_config(manifest, target(cloud), fp)
    image = Image(cloud, image_id, image_id.rsplit("/", 1)[-1], "", fp)
    with run.stage("test"):
        result = check_image(adapter, image, bake_id=run.bake_id,
                             ssh_timeout_s=manifest.validation.ssh_timeout_s,
                             expect_for=lambda key, size: expectations(manifest, cloud, config, fingerprint=fp,
                                                                 digests=digests, test_public_key=key, size=size),
                             out_dir=run.dir / "checks", log_file=run.log_file, log=run.say)
    run.say(f"checks: {result.passed} passed, {result.failed} failed, {result.skipped} skipped")
    run.finish("passed" if result.ok else "failed", checks=result.summary())
    print(json.dumps(result.summary(), indent=2))
    return result
