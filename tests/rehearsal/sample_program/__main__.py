"""A small Pulumi program for the applier's own tests: every resource type and container behaviour
the rehearsal applies, without the real stack. `sample:variant` selects a failure to provoke."""

import pulumi
import pulumi_docker as docker

config = pulumi.Config("sample")
variant = config.get("variant") or "ok"
prefix = f"rehearsal-sample-{pulumi.get_stack()}"
label = docker.ContainerLabelArgs(label="rehearsal.sample", value="yes")

network = docker.Network(
    "net",
    name=f"{prefix}-net",
    labels=[docker.NetworkLabelArgs(label="rehearsal.sample", value="yes")],
)
volume = docker.Volume("data", name=f"{prefix}-data")
base = docker.RemoteImage("python", name="python:3.13-slim", keep_locally=True)

server_health = docker.ContainerHealthcheckArgs(
    tests=[
        "CMD",
        "python",
        "-c",
        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080', timeout=2)",
    ],
    interval="1s",
    timeout="3s",
    retries=3,
)
if variant == "unhealthy":
    server_health = docker.ContainerHealthcheckArgs(
        tests=["CMD", "false"], interval="1s", timeout="1s", retries=1
    )
server = docker.Container(
    "server",
    name=f"{prefix}-server",
    image=base.image_id,
    command=["python", "-m", "http.server", "8080", "--directory", "/data"],
    networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.name, aliases=["web"])],
    mounts=[docker.ContainerMountArgs(type="volume", source=volume.name, target="/data")],
    healthcheck=None if variant == "no-healthcheck" else server_health,
    wait=True,
    wait_timeout=8,
    labels=[label],
    user="1000:1000",
    read_only=True,
    capabilities=docker.ContainerCapabilitiesArgs(drops=["ALL"]),
    security_opts=["no-new-privileges:true"],
    tmpfs={"/tmp": "rw,size=8m"},  # noqa: S108 - a private tmpfs
    destroy_grace_seconds=5,
    gpus="all" if variant == "unknown-input" else None,
)
one_shot = docker.Container(
    "one-shot",
    name=f"{prefix}-one-shot",
    image=base.image_id,
    command=["python", "-c", "print('hello from the one-shot'); raise SystemExit(3)"],
    must_run=False,
    attach=True,
    logs=True,
    labels=[label],
    opts=pulumi.ResourceOptions(depends_on=[server]),
)
# No data dependency on `server`: only depends_on orders it.
client = docker.Container(
    "client",
    name=f"{prefix}-client",
    image=base.image_id,
    command=[
        "python",
        "-c",
        "import time, urllib.request; urllib.request.urlopen('http://web:8080', timeout=5); "
        "print('reached web', flush=True); time.sleep(3600)",
    ],
    networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.name)],
    labels=[label],
    init=True,
    opts=pulumi.ResourceOptions(depends_on=[server]),
)
pulumi.export("oneShotExitCode", one_shot.exit_code)
pulumi.export("oneShotLogs", one_shot.container_logs)
pulumi.export("serverId", server.id)
pulumi.export("clientId", client.id)

# A replacement in each of the engine's two orders (`sample:generation` changes their inputs):
# `side` sets delete_before_replace=False and has no name (auto-named, so old and new coexist),
# `fixed` keeps the provider's delete-before-replace and its fixed name.
generation = config.get("generation")
if generation:
    side = docker.Container(
        "side",
        image=base.image_id,
        command=["sleep", "600"],
        envs=[f"GENERATION={generation}"],
        labels=[label],
        opts=pulumi.ResourceOptions(delete_before_replace=False),
    )
    fixed = docker.Container(
        "fixed",
        name=f"{prefix}-fixed",
        image=base.image_id,
        command=["sleep", "600"],
        envs=[f"GENERATION={generation}"],
        labels=[label],
    )
    pulumi.export("sideName", side.name)

# Secret files as the docker target delivers them (infra/targets/docker_secrets.py): uploaded into
# a container that is never started, whose anonymous volume a read-only container mounts. With
# `sample:secret` set; `sample:secretsDirect` uploads straight into the read-only container.
secret = config.get_secret("secret")
if secret is not None:
    if config.get_bool("secretsDirect"):
        docker.Container(
            "direct",
            name=f"{prefix}-direct",
            image=base.image_id,
            command=["sleep", "600"],
            read_only=True,
            volumes=[docker.ContainerVolumeArgs(container_path="/run/secrets")],
            uploads=[docker.ContainerUploadArgs(file="/run/secrets/token", content=secret)],
            labels=[label],
        )
    else:
        holder = docker.Container(
            "reader-secrets",
            image=base.image_id,
            start=False,
            must_run=False,
            volumes=[docker.ContainerVolumeArgs(container_path="/run/secrets")],
            uploads=[
                docker.ContainerUploadArgs(
                    file="/run/secrets/token", content=secret, permissions="0444"
                )
            ],
            labels=[label],
            opts=pulumi.ResourceOptions(delete_before_replace=False),
        )
        reader = docker.Container(
            "reader",
            name=f"{prefix}-reader",
            image=base.image_id,
            command=["sleep", "600"],
            user="10001:10001",
            read_only=True,
            volumes=[
                docker.ContainerVolumeArgs(from_container=holder.id.apply(lambda i: f"{i}:ro"))
            ],
            labels=[label],
        )
        pulumi.export("readerId", reader.id)
        pulumi.export("holderId", holder.id)
