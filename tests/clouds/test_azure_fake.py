"""The ARM fake holds the documented rules the adapter depends on (each rule's source is cited in
tests/fakes/azure.py). Raw HTTP where the rule is about the wire; the real SDK where it is about what
the SDK does with the answer."""
from __future__ import annotations

import pytest
import requests


SUB = "00000000-0000-0000-0000-0000000000f1"
RG = f"/subscriptions/{SUB}/resourceGroups/rg"
V = "?api-version=2024-07-01"
AUTH = {"Authorization": "Bearer any"}


@pytest.fixture
def fake(arm):
    arm.reset()
    arm.put_resource(RG, {"location": "eastus"})
    return arm


def call(fake, method, path, body=None, headers=AUTH, query=V):
    return requests.request(method, fake.endpoint + path + query, json=body, headers=headers,
                            verify=str(fake.cert_path), timeout=10)


def vm_body(user="clara-check", path=None, nic=f"{RG}/providers/Microsoft.Network/networkInterfaces/n"):
    return {"location": "eastus", "properties": {
        "hardwareProfile": {"vmSize": "Standard_NC8as_T4_v3"},
        "osProfile": {"computerName": "vm", "adminUsername": user, "linuxConfiguration": {
            "disablePasswordAuthentication": True,
            "ssh": {"publicKeys": [{"path": path or f"/home/{user}/.ssh/authorized_keys", "keyData": "ssh-ed25519 A"}]}}},
        "networkProfile": {"networkInterfaces": [{"id": nic}]}}}


def error_of(answer) -> tuple[int, str]:
    body = answer.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return answer.status_code, body["error"]["code"]


def test_every_request_needs_a_bearer_token_and_an_api_version(fake):
    assert error_of(call(fake, "GET", RG, headers={})) == (401, "AuthenticationFailed")
    assert error_of(call(fake, "GET", RG, query="")) == (400, "MissingApiVersionParameter")
    assert call(fake, "GET", RG).status_code == 200


def test_strict_auth_accepts_only_unexpired_tokens_it_issued(fake):
    fake.strict_auth = True
    assert error_of(call(fake, "GET", RG)) == (401, "InvalidAuthenticationToken")
    assert call(fake, "GET", RG, headers={"Authorization": f"Bearer {fake.token()}"}).status_code == 200
    fake.token_lifetime_s = -1
    assert error_of(call(fake, "GET", RG, headers={"Authorization": f"Bearer {fake.token()}"})) == \
        (401, "ExpiredAuthenticationToken")


def test_missing_resources_and_groups_are_404_with_their_codes(fake):
    assert error_of(call(fake, "GET", f"{RG}/providers/Microsoft.Compute/images/nope")) == (404, "ResourceNotFound")
    other = f"/subscriptions/{SUB}/resourceGroups/missing/providers/Microsoft.Compute/images"
    assert error_of(call(fake, "GET", other)) == (404, "ResourceGroupNotFound")
    assert error_of(call(fake, "PUT", other + "/x", {"location": "eastus"})) == (404, "ResourceGroupNotFound")


def test_put_is_a_long_running_operation_and_delete_ends_in_204(fake):
    path = f"{RG}/providers/Microsoft.Network/networkSecurityGroups/nsg"
    created = call(fake, "PUT", path, {"location": "eastus", "properties": {}})
    assert created.status_code == 201 and created.json()["properties"]["provisioningState"] == "Creating"
    op = created.headers["Azure-AsyncOperation"]
    assert "api-version=" in op
    states = [requests.get(op, headers=AUTH, verify=str(fake.cert_path)).json() for _ in range(2)]
    assert [s["status"] for s in states] == ["InProgress", "Succeeded"] and "endTime" in states[1]
    assert call(fake, "GET", path).json()["properties"]["provisioningState"] == "Succeeded"
    again = call(fake, "PUT", path, {"location": "eastus", "properties": {}})
    assert again.status_code == 200 and again.json()["properties"]["provisioningState"] == "Updating"

    deleted = call(fake, "DELETE", path)
    assert deleted.status_code == 202
    monitor = deleted.headers["Location"]
    codes = [requests.get(monitor, headers=AUTH, verify=str(fake.cert_path)).status_code for _ in range(2)]
    assert codes == [202, 204]
    assert call(fake, "DELETE", path).status_code == 204           # already gone: 204, not 404


def test_a_failed_operation_ends_failed_with_an_error(fake):
    fake.fail_operation("/networkSecurityGroups/", "boom", code="InternalExecutionError")
    path = f"{RG}/providers/Microsoft.Network/networkSecurityGroups/nsg"
    op = call(fake, "PUT", path, {"location": "eastus"}).headers["Azure-AsyncOperation"]
    states = [requests.get(op, headers=AUTH, verify=str(fake.cert_path)).json() for _ in range(2)]
    assert states[1]["status"] == "Failed" and states[1]["error"]["code"] == "InternalExecutionError"
    assert call(fake, "GET", path).json()["properties"]["provisioningState"] == "Failed"


@pytest.mark.parametrize("change, code, target", [
    (lambda b: b["properties"].pop("osProfile"), "InvalidParameter", "osProfile"),
    (lambda b: b["properties"]["osProfile"].pop("adminUsername"), "InvalidParameter", "adminUsername"),
    (lambda b: b["properties"].pop("networkProfile"), "InvalidParameter", "networkProfile"),
    (lambda b: b.pop("location"), "LocationRequired", None),
    (lambda b: b["properties"]["osProfile"].update(adminUsername="root"), "InvalidParameter", "adminUsername"),
    (lambda b: b["properties"]["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0].update(
        path="/home/packer/.ssh/authorized_keys"), "InvalidParameter", "linuxConfiguration.ssh.publicKeys.path"),
    (lambda b: b.update(tags={"a/b": "x"}), "InvalidTag", None),
    (lambda b: b.update(tags={"k": "v" * 257}), "InvalidTag", None),
])
def test_a_vm_put_needs_its_documented_properties(fake, change, code, target):
    body = vm_body()
    change(body)
    answer = call(fake, "PUT", f"{RG}/providers/Microsoft.Compute/virtualMachines/vm", body)
    assert error_of(answer) == (400, code)
    assert answer.json()["error"].get("target") == target


def test_a_vms_admin_user_is_created_on_it_and_cannot_change(fake):
    nic = f"{RG}/providers/Microsoft.Network/networkInterfaces/n"
    fake.put_resource(nic, {"location": "eastus", "properties": {}})
    vm = f"{RG}/providers/Microsoft.Compute/virtualMachines/vm"
    assert call(fake, "PUT", vm, vm_body("clara-check")).status_code == 201
    assert fake.admin_users(vm) == {"clara-check"}
    assert error_of(call(fake, "PUT", vm, vm_body("packer"))) == (409, "PropertyChangeNotAllowed")


def test_gallery_definitions_and_versions_need_their_documented_properties(fake):
    gallery = f"{RG}/providers/Microsoft.Compute/galleries/g"
    assert call(fake, "PUT", gallery, {"location": "eastus"}).status_code == 201
    definition = f"{gallery}/images/d"
    assert error_of(call(fake, "PUT", definition, {"location": "eastus", "properties": {"osType": "Linux"}})) == \
        (400, "InvalidParameter")
    assert call(fake, "PUT", definition, {"location": "eastus", "properties": {
        "osType": "Linux", "osState": "Generalized",
        "identifier": {"publisher": "p", "offer": "o", "sku": "s"}}}).status_code == 201
    image = f"{RG}/providers/Microsoft.Compute/images/img"
    fake.put_resource(image, {"location": "eastus"})
    source = {"storageProfile": {"source": {"id": image}}}
    for name in ("1.2", "1.2.x", "2026.315.2147483648"):          # Major.Minor.Patch, each an int32
        assert error_of(call(fake, "PUT", f"{definition}/versions/{name}",
                             {"location": "eastus", "properties": source})) == (400, "InvalidParameter"), name
    assert error_of(call(fake, "PUT", f"{definition}/versions/1.2.3", {"location": "eastus", "properties": {}})) \
        == (400, "InvalidParameter")
    assert call(fake, "PUT", f"{definition}/versions/2026.315.93012",
                {"location": "eastus", "properties": source}).status_code == 201


def test_lists_come_in_pages_that_the_sdk_follows(fake):
    from azure.mgmt.compute import ComputeManagementClient
    from clouds.clients import _StaticToken
    for n in range(5):
        fake.put_resource(f"{RG}/providers/Microsoft.Compute/images/img{n}", {"location": "eastus"})
    fake.page_size = 2
    first = call(fake, "GET", f"{RG}/providers/Microsoft.Compute/images").json()
    assert len(first["value"]) == 2 and "nextLink" in first
    client = ComputeManagementClient(_StaticToken(), SUB, base_url=fake.endpoint, connection_verify=str(fake.cert_path),
                                     credential_scopes=["https://management.azure.com/.default"])
    assert sorted(i.name for i in client.images.list_by_resource_group("rg")) == [f"img{n}" for n in range(5)]
