"""Names shared by every source: the image name and provenance labels as HCL expressions."""
from __future__ import annotations

from dataclasses import dataclass

from core.names import RUNNER_CIDR, TAG_BAKE_ID, TAG_BUILD_TIME, TAG_EXPIRES, TAG_FINGERPRINT, TAG_ROLE

from ..hcl import Block, Expr, Template

PIPELINE_VERSION = "0.1.0"


@dataclass(frozen=True)
class Names:
    image_name: Template        # the image name with ${local.timestamp}
    labels: dict                # provenance + manifest tags, values str or Template/Expr
    run_labels: dict            # for the build VM: bake id and expiry, so `sweep` finds leaks


def names(manifest) -> Names:
    """The fingerprint comes from var.fingerprint (the bake's), through locals, never a constant."""
    parts: list = [manifest.image_name.replace("{name}", manifest.name)]
    for placeholder, local in (("{timestamp}", "local.timestamp"), ("{fingerprint}", "local.fingerprint_short")):
        parts = [piece for part in parts for piece in _split(part, placeholder, Expr(local))]
    image_name = Template(tuple(p for p in parts if p != ""))
    labels = dict(sorted(manifest.tags.items()))
    labels.update({
        TAG_FINGERPRINT: Expr("local.fingerprint_label"),
        "clara-git-commit": Expr("var.git_commit"),
        TAG_BUILD_TIME: Expr("local.timestamp"),
        "clara-source-image": Expr("local.source_image_label"),
        "clara-pipeline": PIPELINE_VERSION.replace(".", "-"),
        TAG_BAKE_ID: Expr("var.bake_id"),
    })
    run_labels = {TAG_BAKE_ID: Expr("var.bake_id"), TAG_EXPIRES: Expr("local.expires"), TAG_ROLE: "build"}
    return Names(image_name, labels, run_labels)


def _split(part, placeholder: str, expr: Expr) -> list:
    if not isinstance(part, str):
        return [part]
    pieces = part.split(placeholder)
    out: list = [pieces[0]]
    for piece in pieces[1:]:
        out += [expr, piece]
    return out


def runner_cidr_variable() -> Block:
    """For builders that open SSH to their build VM: the bake fills in the runner's own /32."""
    var = Block("variable", (RUNNER_CIDR,))
    var.set("type", Expr("string"))
    var.set("description", "The runner's own address as a /32; the bake fills it in.")
    return var


def placement_variable(name: str, default: str, what: str) -> Block:
    """The build VM's size or zone: the manifest's by default; on a capacity error the bake builds
    again with the next of the manifest's fallbacks."""
    var = Block("variable", (name,))
    var.set("type", Expr("string"))
    var.set("default", default)
    var.set("description", f"{what}; the bake passes a fallback when there is no capacity.")
    return var
