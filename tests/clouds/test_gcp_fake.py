"""tests/fakes/gce.py held to the Compute API's documented rules: the discovery document
(compute.v1.json in google-api-python-client) and the docs each rule in the fake cites.
The real google-cloud-compute client talks to the fake, as clouds/gcp/ does; raw HTTP is used
only where the client could not send the request (unknown fields, bad parameters)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from datetime import timedelta

import pytest

from tests.fakes import gce as fakes
from tests.fakes.gce import BASE_PROJECT, FakeGCE

PROJECT = "clara-images"
FAMILY = "common-cu128-ubuntu-2204-nvidia-570"


@pytest.fixture
def fake():
    with FakeGCE() as f:
        yield f


def client(fake, name: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1
    return getattr(compute_v1, name)(credentials=AnonymousCredentials(), client_options={"api_endpoint": fake.url})


def raw(fake, method: str, path: str, body=None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{fake.url}/compute/v1/projects/{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_global(fake, op):
    from google.cloud import compute_v1
    ops = client(fake, "GlobalOperationsClient")
    seen = [op.status]
    while op.status != compute_v1.Operation.Status.DONE:
        op = ops.wait(project=PROJECT, operation=op.name)
        seen.append(op.status)
    return op, seen


# --- the discovery document says what the fake relies on ----------------------------------------

def test_the_discovery_document_says_what_the_fake_enforces():
    doc = fakes.discovery()
    images = doc["resources"]["images"]["methods"]
    order_doc = " ".join(images["list"]["parameters"]["orderBy"]["description"].split())
    assert "only sorting by `name` or `creationTimestamp desc` is supported" in order_doc
    assert "not deprecated" in " ".join(images["getFromFamily"]["description"].split())
    assert doc["schemas"]["Operation"]["properties"]["status"]["enum"] == ["DONE", "PENDING", "RUNNING"]
    assert doc["schemas"]["DeprecationStatus"]["properties"]["state"]["enum"] == \
        ["ACTIVE", "DELETED", "DEPRECATED", "OBSOLETE"]
    assert "compute.images.insert" in doc["schemas"]["Image"]["properties"]["name"]["annotations"]["required"]
    assert doc["schemas"]["Image"]["properties"]["diskSizeGb"]["format"] == "int64"
    filter_doc = " ".join(images["list"]["parameters"]["filter"]["description"].split())
    assert "provide each separate expression within parentheses" in filter_doc
    for resource in ("images", "firewalls", "instances", "disks"):
        assert "orderBy" in doc["resources"][resource]["methods"]["list"]["parameters"]


# --- list rules ---------------------------------------------------------------------------------

def test_list_refuses_filter_with_order_by(fake):
    from google.api_core.exceptions import BadRequest
    from google.cloud import compute_v1
    images = client(fake, "ImagesClient")
    with pytest.raises(BadRequest, match="Specifying both a list filter and sort order is not currently supported"):
        list(images.list(request=compute_v1.ListImagesRequest(project=BASE_PROJECT, filter=f'family = "{FAMILY}"',
                                                               order_by="creationTimestamp desc")))
    for method, path in (("GET", "clara-images/global/firewalls"), ("GET", "clara-images/zones/us-central1-a/instances"),
                         ("GET", "clara-images/zones/us-central1-a/disks")):
        status, body = raw(fake, method, path + "?filter=name%20%3D%20x&orderBy=name")
        assert status == 400 and "sort order is not currently supported" in body["error"]["message"]


@pytest.mark.parametrize("order", ["creationTimestamp", "creationTimestamp asc", "name desc", "labels.x"])
def test_list_refuses_an_order_by_gce_does_not_support(fake, order):
    from google.api_core.exceptions import BadRequest
    from google.cloud import compute_v1
    with pytest.raises(BadRequest, match="orderBy"):
        list(client(fake, "ImagesClient").list(request=compute_v1.ListImagesRequest(project=BASE_PROJECT,
                                                                                    order_by=order)))


def test_list_orders_by_name_by_default_and_newest_first_when_asked(fake):
    from google.cloud import compute_v1
    images = client(fake, "ImagesClient")
    fake.add_image(PROJECT, "a-older", created=fake.clock - timedelta(days=2))
    fake.add_image(PROJECT, "b-newer", created=fake.clock - timedelta(days=1))

    def names(**order):
        return [i.name for i in images.list(request=compute_v1.ListImagesRequest(project=PROJECT, **order))]
    assert names() == names(order_by="name") == ["a-older", "b-newer"]
    assert names(order_by="creationTimestamp desc") == ["b-newer", "a-older"]


def test_filters_with_several_expressions_need_parentheses(fake):
    from google.api_core.exceptions import BadRequest
    from google.cloud import compute_v1
    images = client(fake, "ImagesClient")
    fake.add_image(PROJECT, "hit", labels={"a": "1", "b": "2"})
    fake.add_image(PROJECT, "miss", labels={"a": "1", "b": "3"})

    def names(expression):
        return [i.name for i in images.list(request=compute_v1.ListImagesRequest(project=PROJECT, filter=expression))]
    assert names('(labels.a = "1") AND (labels.b = "2")') == ["hit"]
    assert names('(labels.a = "1") (labels.b != "2")') == ["miss"]
    assert names('labels.b = "3"') == ["miss"]
    with pytest.raises(BadRequest, match="parentheses"):
        names('labels.a = "1" AND labels.b = "2"')


def test_hyphenated_label_keys_are_filtered_unquoted_as_real_clients_do(fake):
    """#23 item 15, settled: GCE's AIP-160 filters take `labels.<key-with-hyphens> = "v"` as written.
    Evidence (docs/FIDELITY.md): compute.v1.json's `filter` ("filter nested fields ... based on
    resource labels"); packer-plugin-googlecompute's image data source acceptance test against real
    GCE (`labels.public-image=true`); Ray's GCP node provider (`(labels.ray-cluster-name = ...)`).
    The adapter's own filters have that form, and the fake evaluates them."""
    from google.cloud import compute_v1
    from clouds.gcp.sdk import list_filter
    from core.names import TAG_FINGERPRINT, TAG_VALIDATED
    images = client(fake, "ImagesClient")
    fake.add_image(PROJECT, "hit", labels={TAG_FINGERPRINT: "ab" * 16, TAG_VALIDATED: "true"})
    fake.add_image(PROJECT, "miss", labels={TAG_FINGERPRINT: "cd" * 16, TAG_VALIDATED: "true"})
    expression = list_filter(f'labels.{TAG_FINGERPRINT} = "{"ab" * 16}"', f'labels.{TAG_VALIDATED} = "true"')
    assert expression == f'(labels.clara-fingerprint = "{"ab" * 16}") AND (labels.clara-validated = "true")'
    found = images.list(request=compute_v1.ListImagesRequest(project=PROJECT, filter=expression))
    assert [i.name for i in found] == ["hit"]


# --- images.getFromFamily -------------------------------------------------------------------------

def test_get_from_family_skips_deprecated_images_and_404s_when_none_is_left(fake):
    from google.api_core.exceptions import NotFound
    images = client(fake, "ImagesClient")
    newest = images.get_from_family(project=BASE_PROJECT, family=FAMILY)
    assert newest.name == f"{FAMILY}-v20250001"
    for state in ("DEPRECATED", "OBSOLETE"):
        name = images.get_from_family(project=BASE_PROJECT, family=FAMILY).name
        fake.images[(BASE_PROJECT, name)]["deprecated"] = {"state": state}
    with pytest.raises(NotFound):
        images.get_from_family(project=BASE_PROJECT, family=FAMILY)


# --- required fields, unknown fields, enums, patterns --------------------------------------------

def test_image_insert_needs_a_name_and_exactly_one_source(fake):
    from google.api_core.exceptions import BadRequest
    from google.cloud import compute_v1
    images = client(fake, "ImagesClient")
    source = f"projects/{BASE_PROJECT}/global/images/{FAMILY}-v20250000"
    with pytest.raises(BadRequest, match="Required field 'resource.name'"):
        images.insert_unary(project=PROJECT, image_resource=compute_v1.Image(source_image=source))
    with pytest.raises(BadRequest, match="Exactly one of"):
        images.insert_unary(project=PROJECT, image_resource=compute_v1.Image(name="no-source"))
    with pytest.raises(BadRequest, match="Exactly one of"):
        images.insert_unary(project=PROJECT, image_resource=compute_v1.Image(
            name="two", source_image=source, source_disk="zones/us-central1-a/disks/d"))
    assert not [k for k in fake.images if k[1] in ("no-source", "two")]


def test_inserting_an_existing_image_name_is_409_already_exists_and_changes_nothing(fake):
    """As GCE answers (the fake's comment cites it): HTTP 409 on the insert, reason alreadyExists,
    and google-cloud-compute raises Conflict; no operation runs."""
    from google.api_core.exceptions import Conflict
    from google.cloud import compute_v1
    images = client(fake, "ImagesClient")
    source = f"projects/{BASE_PROJECT}/global/images/{FAMILY}-v20250000"
    existing = fake.add_image(PROJECT, "taken", labels={"keep": "me"})
    operations = len(fake.operations)
    with pytest.raises(Conflict, match="already exists") as caught:
        images.insert_unary(request=compute_v1.InsertImageRequest(
            project=PROJECT, request_id=str(uuid.uuid4()),
            image_resource=compute_v1.Image(name="taken", source_image=source)))
    assert caught.value.code == 409 and caught.value.errors[0]["reason"] == "alreadyExists"
    assert fake.images[(PROJECT, "taken")] is existing and len(fake.operations) == operations


def test_an_empty_deprecate_clears_the_deprecation(fake):
    """images.deprecate: "If an empty request body is given, clears the deprecation status instead"."""
    from google.cloud import compute_v1
    doc = " ".join(fakes.discovery()["resources"]["images"]["methods"]["deprecate"]["description"].split())
    assert "If an empty request body is given, clears the deprecation status instead" in doc
    images = client(fake, "ImagesClient")
    fake.add_image(PROJECT, "old")
    op = images.deprecate_unary(project=PROJECT, image="old", deprecation_status_resource=compute_v1.DeprecationStatus(
        state="DEPRECATED"))
    wait_global(fake, op)
    assert fake.images[(PROJECT, "old")]["deprecated"]["state"] == "DEPRECATED"
    wait_global(fake, images.deprecate_unary(project=PROJECT, image="old",
                                             deprecation_status_resource=compute_v1.DeprecationStatus()))
    assert "deprecated" not in fake.images[(PROJECT, "old")]


def test_unknown_and_snake_case_fields_are_refused(fake):
    source = f"projects/{BASE_PROJECT}/global/images/{FAMILY}-v20250000"
    status, body = raw(fake, "POST", f"{PROJECT}/global/images", {"name": "x", "source_image": source})
    assert status == 400 and 'Unknown name "source_image"' in body["error"]["message"]
    status, body = raw(fake, "POST", f"{PROJECT}/global/images?colour=blue", {"name": "x", "sourceImage": source})
    assert status == 400 and 'Unknown name "colour"' in body["error"]["message"]
    assert (PROJECT, "x") not in fake.images


def test_enum_values_and_name_patterns_are_checked(fake):
    status, body = raw(fake, "POST", f"{BASE_PROJECT}/global/images/{FAMILY}-v20250000/deprecate",
                       {"state": "RETIRED"})
    assert status == 400 and "Must be one of ACTIVE, DELETED, DEPRECATED, OBSOLETE" in body["error"]["message"]
    status, body = raw(fake, "GET", f"{PROJECT}/global/images/Not_A_Name")
    assert status == 400 and "regex" in body["error"]["message"]
    status, body = raw(fake, "POST", f"{PROJECT}/global/images?requestId=not-a-uuid",
                       {"name": "x", "sourceImage": f"projects/{BASE_PROJECT}/global/images/{FAMILY}-v20250000"})
    assert status == 400 and "requestId" in body["error"]["message"]
    status, _ = raw(fake, "PUT", f"{PROJECT}/global/images/x")
    assert status == 404                                          # no such method in compute.v1.json


def test_instance_insert_needs_a_machine_type_a_boot_source_and_terminate_with_gpus(fake):
    from google.api_core.exceptions import BadRequest
    from google.cloud import compute_v1 as c
    instances = client(fake, "InstancesClient")
    boot = c.AttachedDisk(boot=True, auto_delete=True, initialize_params=c.AttachedDiskInitializeParams(
        source_image=f"projects/{BASE_PROJECT}/global/images/family/{FAMILY}"))
    gpu = [c.AcceleratorConfig(accelerator_type="zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4",
                               accelerator_count=1)]
    with pytest.raises(BadRequest, match="machineType"):
        instances.insert_unary(project=PROJECT, zone="us-central1-a", instance_resource=c.Instance(
            name="vm", disks=[boot]))
    with pytest.raises(BadRequest, match="boot disk"):
        instances.insert_unary(project=PROJECT, zone="us-central1-a", instance_resource=c.Instance(
            name="vm", machine_type="zones/us-central1-a/machineTypes/n1-standard-4",
            disks=[c.AttachedDisk(boot=True, initialize_params=c.AttachedDiskInitializeParams(disk_size_gb=10))]))
    with pytest.raises(BadRequest, match="live migration"):
        instances.insert_unary(project=PROJECT, zone="us-central1-a", instance_resource=c.Instance(
            name="vm", machine_type="zones/us-central1-a/machineTypes/n1-standard-4", disks=[boot],
            guest_accelerators=gpu))
    assert not fake.instances


def test_labels_follow_the_documented_rules(fake):
    from google.api_core.exceptions import BadRequest
    from google.cloud import compute_v1 as c
    images = client(fake, "ImagesClient")
    image = fake.add_image(PROJECT, "labelled")
    for labels in ({"Upper": "x"}, {"ok": "Not Lower"}, {"x" * 64: "v"}, {f"k{i}": "v" for i in range(65)}):
        with pytest.raises(BadRequest, match="labels"):
            images.set_labels_unary(project=PROJECT, resource="labelled", global_set_labels_request_resource=
                                    c.GlobalSetLabelsRequest(labels=labels, label_fingerprint=image["labelFingerprint"]))
    assert fake.images[(PROJECT, "labelled")]["labels"] == {}


def test_set_labels_needs_the_current_fingerprint(fake):
    from google.api_core.exceptions import PreconditionFailed
    from google.cloud import compute_v1 as c
    fake.add_image(PROJECT, "labelled", labels={"a": "1"})
    with pytest.raises(PreconditionFailed):
        client(fake, "ImagesClient").set_labels_unary(
            project=PROJECT, resource="labelled", global_set_labels_request_resource=c.GlobalSetLabelsRequest(
                labels={"a": "2"}, label_fingerprint="c3RhbGU="))


def test_set_iam_policy_with_a_stale_etag_is_a_conflict(fake):
    from google.api_core.exceptions import Conflict
    from google.cloud import compute_v1 as c
    images = client(fake, "ImagesClient")
    fake.add_image(PROJECT, "shared")
    policy = images.get_iam_policy(project=PROJECT, resource="shared")
    binding = c.Binding(role="roles/compute.imageUser", members=["group:a@example.com"])
    images.set_iam_policy(project=PROJECT, resource="shared", global_set_policy_request_resource=
                          c.GlobalSetPolicyRequest(policy=c.Policy(bindings=[binding], etag=policy.etag)))
    with pytest.raises(Conflict):
        images.set_iam_policy(project=PROJECT, resource="shared", global_set_policy_request_resource=
                              c.GlobalSetPolicyRequest(policy=c.Policy(bindings=[], etag=policy.etag)))


def test_obsolete_images_cannot_be_used(fake):
    from google.api_core.exceptions import BadRequest
    from google.cloud import compute_v1 as c
    fake.add_image(PROJECT, "gone", deprecated={"state": "OBSOLETE"})
    with pytest.raises(BadRequest, match="obsolete"):
        client(fake, "ImagesClient").insert_unary(project=PROJECT, image_resource=c.Image(
            name="copy", source_image=f"projects/{PROJECT}/global/images/gone"))


# --- operations and answers --------------------------------------------------------------------

def test_operations_go_pending_running_done(fake):
    from google.cloud import compute_v1 as c
    op = client(fake, "ImagesClient").insert_unary(request=c.InsertImageRequest(
        project=PROJECT, request_id=str(uuid.uuid4()), image_resource=c.Image(
            name="copy", source_image=f"projects/{BASE_PROJECT}/global/images/{FAMILY}-v20250000")))
    done, seen = wait_global(fake, op)
    S = c.Operation.Status
    assert seen == [S.PENDING, S.RUNNING, S.DONE] and not done.error.errors and done.end_time


def test_a_failed_operation_is_done_with_an_error_and_http_status(fake):
    from google.cloud import compute_v1 as c
    fake.operation_error_next("images.insert", code="QUOTA_EXCEEDED", http_status=403)
    op = client(fake, "ImagesClient").insert_unary(project=PROJECT, image_resource=c.Image(
        name="copy", source_image=f"projects/{BASE_PROJECT}/global/images/{FAMILY}-v20250000"))
    done, _ = wait_global(fake, op)
    assert [e.code for e in done.error.errors] == ["QUOTA_EXCEEDED"]
    assert done.http_error_status_code == 403 and done.http_error_message == "FORBIDDEN"
    assert (PROJECT, "copy") not in fake.images                     # no effect


def test_errors_have_googles_json_error_shape(fake):
    status, body = raw(fake, "GET", f"{PROJECT}/global/images/missing")
    assert status == 404
    assert set(body) == {"error"} and body["error"]["code"] == 404 and "missing" in body["error"]["message"]
    (detail,) = body["error"]["errors"]
    assert detail == {"domain": "global", "reason": "notFound", "message": body["error"]["message"]}


def test_answers_are_camel_case_with_int64_as_strings(fake):
    status, image = raw(fake, "GET", f"{BASE_PROJECT}/global/images/{FAMILY}-v20250000")
    assert status == 200
    assert isinstance(image["id"], str) and isinstance(image["diskSizeGb"], str)
    assert "creationTimestamp" in image and "labelFingerprint" in image
    assert not [k for k in image if "_" in k]


def test_an_answer_outside_the_response_schema_is_a_loud_fake_bug(fake):
    fake.add_image(PROJECT, "broken", disk_size_gb=10)              # snake_case and a bare int64: never real
    status, body = raw(fake, "GET", f"{PROJECT}/global/images/broken")
    assert status == 500 and "FakeGCE bug" in body["error"]["message"] and fake.bugs
