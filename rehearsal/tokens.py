"""The pulumi-docker resource types the program registers, as type tokens on the wire."""

NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
IMAGE = "docker:index/image:Image"
CONTAINER = "docker:index/container:Container"
SERVICE = "docker:index/service:Service"
SECRET = "docker:index/secret:Secret"  # noqa: S105 - a type token
STACK_REFERENCE = "pulumi:pulumi:StackReference"
