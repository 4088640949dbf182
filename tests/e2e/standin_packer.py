#!/usr/bin/env python3
"""A stand-in for `packer` in offline tests: reads the rendered template like Packer would and
registers the image in the fake cloud (GCE fake, ARM fake, or moto) through the real SDKs.

It runs as real Packer does, two processes, and prints Packer's own lines (tests/pipeline/
packer_model.py, captured from the real binary): a SIGINT to its pid alone is ignored; SIGINT to
its process group, or SIGTERM, cancels the build.
STANDIN_PACKER_SECONDS: how long the "build" takes (cancellable as above, like Packer).
STANDIN_PACKER_FAIL=1: fail mid-build after creating nothing.
STANDIN_PACKER_NO_CAPACITY=a,b: fail like a capacity error when a variable (given or default) is a or b.
STANDIN_PACKER_SBOM_RAW=FILE: the guest's raw inventory (/var/lib/clara-image/sbom-raw.json, contract 1 of
  SUPPLY.md); the template's `file` download provisioner copies it to its destination (local.sbom_raw: the
  `sbom_raw` variable, else sbom-raw.json beside the template). Unset: the guest wrote none, nothing is copied.
Like real Packer, it refuses an unset variable that has no default and an undeclared -var.
"""
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.pipeline import packer_model  # noqa: E402

args = sys.argv[1:]
if args[:1] == ["version"]:
    print("Packer v1.14.2 (stand-in)")      # the plugin path, which every cloud supports
    sys.exit(0)
if args[:1] == ["init"]:
    sys.exit(0)

variables = {}
for i, arg in enumerate(args):
    if arg == "-var":
        key, _, value = args[i + 1].partition("=")
        variables[key] = value
timestamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
locals_ = {"timestamp": timestamp, "expires": variables.get("expires") or timestamp[:12],
           "fingerprint_label": variables.get("fingerprint", "")[:32],
           "fingerprint_short": variables.get("fingerprint", "")[:12],
           # packer/render.py: var.sbom_raw != "" ? var.sbom_raw : "${path.root}/sbom-raw.json"
           "sbom_raw": variables.get("sbom_raw") or str(Path.cwd() / "sbom-raw.json"),
           "source_image_label": re.sub(r"[^a-z0-9_-]", "-", variables.get("source_image", "").lower())[:63]}


def value(text):
    if not isinstance(text, str):
        return text
    text = text[1:-1] if text.startswith('"') and text.endswith('"') else text
    # A variable's value as Packer sees it: the -var given, else the template's default.
    text = re.sub(r"\$\{var\.([a-z_]+)\}", lambda m: effective.get(m.group(1), variables.get(m.group(1), "")), text)
    return re.sub(r"\$\{local\.([a-z_]+)\}", lambda m: locals_[m.group(1)], text)


def labels(block):
    return {value(k): value(v) for k, v in block.items()}


def check_variables(template) -> list[str]:
    """Like real Packer: a variable without a default must be given; an undeclared one is an error."""
    declared = {value(name): block for entry in template.get("variable", []) for name, block in entry.items()}
    errors = [f'Error: Unset variable "{name}"\n\nA used variable must be set or have a default value (stand-in packer)'
              for name, block in declared.items() if "default" not in block and name not in variables]
    errors += [f'Error: Undefined -var variable\n\nA "{name}" variable was passed in the command line but was '
               "not found in known variables (stand-in packer)" for name in variables if name not in declared]
    effective.update({name: value(block.get("default", "")) for name, block in declared.items()})
    effective.update(variables)
    return errors


effective = {}


def main() -> int:
    import hcl2
    cancel = packer_model.Cancel()
    template = hcl2.loads(Path("template.pkr.hcl").read_text())
    errors = check_variables(template)
    if errors:
        print("\n\n".join(errors), flush=True)
        return 1
    (builder_key, sources), = template["source"][0].items()
    builder = value(builder_key)
    build = f"{builder}.clara"
    src = sources['"clara"']
    pp = template["build"][0]["post-processor"][0]['"manifest"']
    custom = {value(k): value(v) for k, v in pp["custom_data"].items()}
    print(f"==> {build}: stand-in build starting", flush=True)
    deadline = time.monotonic() + float(os.environ.get("STANDIN_PACKER_SECONDS", "0"))
    while time.monotonic() < deadline and not cancel.received:
        time.sleep(0.05)
    if cancel.received:
        print(f"==> {build}: nothing to delete: the stand-in creates its image at the end", flush=True)
        return cancel.finish(build)
    if os.environ.get("STANDIN_PACKER_FAIL"):
        return packer_model.failed(build, "stand-in build failed on purpose")
    exhausted = set(filter(None, os.environ.get("STANDIN_PACKER_NO_CAPACITY", "").split(",")))
    if exhausted & {str(v) for v in effective.values()}:
        error = ("Error creating instance: ZONE_RESOURCE_POOL_EXHAUSTED InsufficientInstanceCapacity "
                 "SkuNotAvailable: no capacity (stand-in packer)")
        print(f"==> {build}: {error}", flush=True)
        return packer_model.failed(build, error)
    download(build, template["build"][0].get("provisioner", []))
    artifact = create(builder, src)
    Path("packer-manifest.json").write_text(json.dumps({"builds": [{
        "name": "clara", "builder_type": builder, "build_time": int(time.time()), "files": None,
        "artifact_id": artifact, "packer_run_uuid": "standin", "custom_data": custom}], "last_run_uuid": "standin"}))
    return packer_model.succeeded(build, artifact)


def download(build: str, provisioners: list) -> None:
    """The template's `file` provisioners with direction "download": the guest's raw inventory comes back
    to the host (STANDIN_PACKER_SBOM_RAW stands for the guest's file)."""
    guest_file = os.environ.get("STANDIN_PACKER_SBOM_RAW")
    for entry in provisioners:
        block = entry.get('"file"', {})
        if value(block.get("direction", "")) != "download" or not guest_file:
            continue
        destination = Path(value(block["destination"]))
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(Path(guest_file).read_bytes())
        print(f"==> {build}: Downloading {value(block['source'])} => {destination} (stand-in)", flush=True)


def create(builder: str, src: dict) -> str:
    """Launch the build VM the template describes and register the image in the fake cloud, through
    the real SDKs, as the builder would; the build VM is deleted afterwards, as Packer's cleanup does."""
    from clouds import clients
    if builder == "googlecompute":
        from google.cloud import compute_v1
        name = value(src["image_name"])
        project = value(src["project_id"])
        build_vm = gce_build_vm(src, project)
        image = compute_v1.Image(name=name, labels=labels(src["image_labels"]),
                                 source_image=f"projects/{value(src['source_image_project_id'][0])}/global/images/"
                                              f"{variables.get('source_image', 'base')}")
        op = clients.gce("ImagesClient").insert_unary(project=project, image_resource=image)
        ops = clients.gce("GlobalOperationsClient")
        while op.status != compute_v1.Operation.Status.DONE:
            op = ops.wait(project=project, operation=op.name)
        gce_delete(project, *build_vm)
        artifact = name
    elif builder == "azure-arm":
        from azure.mgmt.compute import models
        sub = clients.azure_subscription(None)
        compute = clients.azure("azure.mgmt.compute.ComputeManagementClient", sub)
        name, group = value(src["managed_image_name"]), value(src["managed_image_resource_group_name"])
        temp_group = azure_build_vm(src, sub, compute)
        result = compute.images.begin_create_or_update(group, name, models.Image(
            location=value(src["location"]), tags=labels(src["azure_tags"]),
            hyper_v_generation="V2")).result()
        clients.azure("azure.mgmt.resource.resources.ResourceManagementClient", sub).resource_groups.begin_delete(
            temp_group).result()
        artifact = result.id
    elif builder == "amazon-ebs":
        region = value(src["region"])
        ec2 = clients.aws("ec2", region)
        filters = src["source_ami_filter"][0]
        base = sorted(ec2.describe_images(Owners=[value(o) for o in filters["owners"]])["Images"],
                      key=lambda i: i["CreationDate"])[-1]
        run = ec2.run_instances(ImageId=base["ImageId"], InstanceType=value(src["instance_type"]), MinCount=1, MaxCount=1,
                                TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                    {"Key": k, "Value": v} for k, v in labels(src["run_tags"]).items()]}])
        instance = run["Instances"][0]["InstanceId"]
        ami = ec2.create_image(InstanceId=instance, Name=value(src["ami_name"]))["ImageId"]
        ec2.create_tags(Resources=[ami], Tags=[{"Key": k, "Value": v} for k, v in labels(src["tags"]).items()])
        ec2.terminate_instances(InstanceIds=[instance])
        artifact = f"{region}:{ami}"
    else:
        raise SystemExit(f"stand-in packer: builder {builder} not supported")
    return artifact


def gce_build_vm(src: dict, project: str) -> tuple[str, str]:
    """instances.insert as googlecompute's step_create_instance makes it: the machine type, the
    accelerators and on_host_maintenance (the plugin's default MIGRATE) from the template."""
    from google.cloud import compute_v1
    from clouds import clients
    zone = value(src["zone"])
    name = "packer-" + os.urandom(8).hex()
    accelerators = []
    if "accelerator_type" in src:
        accelerators = [compute_v1.AcceleratorConfig(accelerator_type=value(src["accelerator_type"]),
                                                     accelerator_count=int(value(src["accelerator_count"])))]
    base = f"projects/{value(src['source_image_project_id'][0])}/global/images/{variables.get('source_image', 'base')}"
    instance = compute_v1.Instance(
        name=name, machine_type=f"zones/{zone}/machineTypes/{value(src['machine_type'])}",
        labels=labels(src["labels"]), guest_accelerators=accelerators,
        scheduling=compute_v1.Scheduling(on_host_maintenance=value(src.get("on_host_maintenance", "MIGRATE"))),
        disks=[compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=compute_v1.AttachedDiskInitializeParams(
            source_image=base, disk_size_gb=int(value(src["disk_size"]))))],
        network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default")])
    op = clients.gce("InstancesClient").insert_unary(project=project, zone=zone, instance_resource=instance)
    _gce_wait(project, zone, op)
    return zone, name


def gce_delete(project: str, zone: str, name: str) -> None:
    from clouds import clients
    _gce_wait(project, zone, clients.gce("InstancesClient").delete_unary(project=project, zone=zone, instance=name))


def _gce_wait(project, zone, op):
    from google.cloud import compute_v1
    from clouds import clients
    ops = clients.gce("ZoneOperationsClient")
    while op.status != compute_v1.Operation.Status.DONE:
        op = ops.wait(project=project, zone=zone, operation=op.name)
    if op.error and op.error.errors:
        raise SystemExit(f"stand-in packer: {op.error.errors[0].code}: {op.error.errors[0].message}")


def azure_build_vm(src: dict, sub: str, compute) -> str:
    """azure-arm's build VM in its temporary resource group (the group, a VNet, a NIC, the VM with the
    template's vm_size, marketplace image and plan); returns the group, deleted after the image."""
    from azure.mgmt.compute import models as cm
    from azure.mgmt.network import models as nm
    from clouds import clients
    group, location, tags = value(src["temp_resource_group_name"]), value(src["location"]), labels(src["azure_tags"])
    clients.azure("azure.mgmt.resource.resources.ResourceManagementClient", sub).resource_groups.create_or_update(
        group, {"location": location, "tags": tags})
    network = clients.azure("azure.mgmt.network.NetworkManagementClient", sub)
    vnet = network.virtual_networks.begin_create_or_update(group, "pkrvn", nm.VirtualNetwork(
        # The plugin's own default is a private /16; the fakes use shared address space (100.64.0.0/10).
        location=location, address_space=nm.AddressSpace(address_prefixes=["100.64.0.0/16"]),
        subnets=[nm.Subnet(name="pkrsn", address_prefix="100.64.0.0/24")])).result()
    nic = network.network_interfaces.begin_create_or_update(group, "pkrni", nm.NetworkInterface(
        location=location, ip_configurations=[nm.NetworkInterfaceIPConfiguration(
            name="ipconfig", subnet=nm.Subnet(id=vnet.subnets[0].id))])).result()
    source = variables.get("source_image", "")
    version = source.split(":")[3] if source.count(":") == 3 else "latest"
    plan = src.get("plan_info", [None])[0]
    user = value(src["ssh_username"])
    compute.virtual_machines.begin_create_or_update(group, "pkrvm", cm.VirtualMachine(
        location=location, tags=tags,
        plan=cm.Plan(name=value(plan["plan_name"]), product=value(plan["plan_product"]),
                     publisher=value(plan["plan_publisher"])) if plan else None,
        hardware_profile=cm.HardwareProfile(vm_size=value(src["vm_size"])),
        storage_profile=cm.StorageProfile(image_reference=cm.ImageReference(
            publisher=value(src["image_publisher"]), offer=value(src["image_offer"]), sku=value(src["image_sku"]),
            version=version)),
        os_profile=cm.OSProfile(computer_name="pkrvm", admin_username=user, linux_configuration=cm.LinuxConfiguration(
            disable_password_authentication=True, ssh=cm.SshConfiguration(public_keys=[cm.SshPublicKey(
                path=f"/home/{user}/.ssh/authorized_keys", key_data="ssh-ed25519 AAAA stand-in")]))),
        network_profile=cm.NetworkProfile(network_interfaces=[cm.NetworkInterfaceReference(id=nic.id)]))).result()
    return group


if __name__ == "__main__":
    packer_model.run_as_packer(main)
