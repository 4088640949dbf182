"""Names shared by every source: the image name and provenance labels as HCL expressions."""
from __future__ import annotations

from dataclasses import dataclass

from ..hcl import Expr, Template

PIPELINE_VERSION = "0.1.0"


@dataclass(frozen=True)
class Names:
    image_name: Template        # the image name with ${local.timestamp}
    labels: dict                # provenance + manifest tags, values str or Template/Expr
    run_labels: dict            # for the build VM: bake id and expiry, so `sweep` finds leaks


def names(manifest, fingerprint: str) -> Names:
    pattern = (manifest.image_name.replace("{name}", manifest.name)
               .replace("{fingerprint}", fingerprint[:12]))
    before, _, after = pattern.partition("{timestamp}")
    image_name = Template((before, Expr("local.timestamp"), after))
    labels = dict(sorted(manifest.tags.items()))
    labels.update({
        "clara-fingerprint": fingerprint[:32],
        "clara-git-commit": Expr("var.git_commit"),
        "clara-build-time": Expr("local.timestamp"),
        "clara-source-image": Expr("local.source_image_label"),
        "clara-pipeline": PIPELINE_VERSION.replace(".", "-"),
        "clara-bake-id": Expr("var.bake_id"),
    })
    run_labels = {"clara-bake-id": Expr("var.bake_id"), "clara-expires": Expr("local.expires"),
                  "clara-role": "build"}
    return Names(image_name, labels, run_labels)
