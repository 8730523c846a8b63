"""Reading the stack's configuration: once, before any resource, every problem in one message.

Anything wrong (an unknown key, a bad port, a non-positive count, a secret stored in plain text, a
prod stack without its secrets) stops the program with one message per problem that names the key
and the exact `pulumi config set` command that fixes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
from pydantic import BaseModel, ValidationError

from infra.config.credentials import (
    DEV_ONLY_POSTGRES_PASSWORD,
    PROD_REQUIRED_SECRETS,
    SECRET_KEYS,
    CredentialRules,
    Credentials,
    load_credentials,
)
from infra.config.model import PROJECT, StackConfig

# A working example value per key: the "fix" half of every error message.
_EXAMPLES: Mapping[str, str] = {
    "postgresPassword": "'<a long random password>'",
    "redisPassword": "'<a long random password>'",
    "flowerBasicAuth": "'admin:<a long random password>'",
    "appEnv": "'[\"VISIBILITY_TIMEOUT_SECONDS=300\"]'",
    "publishAddress": "127.0.0.1",
    "appImageTag": "v1",
    "postgresNodeLabels": "'[\"taskstack.postgres=true\"]'",
    "redisNodeLabels": "'[\"taskstack.redis=true\"]'",
    "backupRepositoryNodeLabels": "'[\"taskstack.backup=true\"]'",
    "endpointMode": "dnsrr",
    "publishMode": "host",
    "tlsCertificate": '-- "$(cat fullchain.pem)"',
    "tlsKey": '-- "$(cat privkey.pem)"',
    "apiReplicas": "2",
    "alertWebhookUrl": "'https://hooks.example.com/alerts'",
    "otlpEndpoint": "http://collector:4318",
    "initialApiKey": '"tsk_$(openssl rand -hex 24)"',
    "backupRepository": "repository-host",
    "backupRepositoryPath": "/mnt/backups/taskstack",
    "restoreTarget": "2026-12-07T10:00:00+00:00",
}


class StackConfigError(pulumi.RunError):
    """Raised before any resource is declared; Pulumi prints the message without a traceback."""


FIELD_BY_KEY: Mapping[str, str] = {
    (field.alias or name): name
    for model in (StackConfig, CredentialRules)
    for name, field in model.model_fields.items()
}


def set_command(key: str, example: str | None = None) -> str:
    """The `pulumi config set` command that gives `key` a valid value."""
    secret = " --secret" if key in SECRET_KEYS else ""
    if example is None:
        example = _EXAMPLES.get(key)
    if example is None:
        field = StackConfig.model_fields[FIELD_BY_KEY[key]]
        example = str(field.default)
    return f"pulumi config set{secret} {PROJECT}:{key} {example}"


def _project_values() -> tuple[dict[str, Any], set[str]]:
    """Every `taskstack:*` value the engine passed in, and which of them are secret.

    Public SDK API only. Pulumi's language host passes the stack configuration in PULUMI_CONFIG
    (`pulumi.runtime.get_config_env`), its secret keys in PULUMI_CONFIG_SECRET_KEYS: an unknown key
    set with `pulumi config set` is found there. A configuration handed over another way (the
    Automation API's `set_all_config`) is read key by key through `pulumi.Config`: the SDK lists no
    keys then, so only the known ones are seen.
    """
    prefix = f"{PROJECT}:"
    bag = pulumi.Config(PROJECT)
    present = {
        k.removeprefix(prefix) for k in pulumi.runtime.get_config_env() if k.startswith(prefix)
    }
    present |= {key for key in FIELD_BY_KEY if bag.get(key) is not None}
    values = {key: bag.get(key) for key in sorted(present)}
    passed_as_secret = set(pulumi.runtime.get_config_secret_keys_env())
    secrets = {
        key
        for key in present
        if pulumi.runtime.is_config_secret(prefix + key) or prefix + key in passed_as_secret
    }
    return values, secrets


def _describe(error: Mapping[str, Any], raw: Mapping[str, Any]) -> str:
    loc = error["loc"]
    key = str(loc[0]) if loc else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        known = ", ".join(sorted(FIELD_BY_KEY))
        return (
            f"{PROJECT}:{key} is not a setting of this program (known keys: {known}).\n"
            f"  fix: pulumi config rm {PROJECT}:{key}"
        )
    if not key:  # a cross-key rule: the message starts with the key it blames
        key, _, message = message.partition(": ")
    shown = "" if key in SECRET_KEYS or key not in raw else f" (got {raw[key]!r})"
    return f"{PROJECT}:{key}: {message}{shown}.\n  fix: {set_command(key)}"


def _prod_rules(values: Mapping[str, Any]) -> list[str]:
    problems = [
        f"{PROJECT}:{key} is required in a prod stack and is not set.\n  fix: {set_command(key)}"
        for key in PROD_REQUIRED_SECRETS
        if key not in values
    ]
    if values.get("postgresPassword") == DEV_ONLY_POSTGRES_PASSWORD:
        problems.append(
            f"{PROJECT}:postgresPassword is the published dev-only password; a prod stack needs "
            f"its own.\n  fix: {set_command('postgresPassword')}"
        )
    return problems


def _validated(model: type[BaseModel], values: Mapping[str, Any]) -> tuple[Any, list[str]]:
    try:
        return model.model_validate(dict(values)), []
    except ValidationError as exc:
        return None, [_describe(error, values) for error in exc.errors()]


def parse_stack_config(values: Mapping[str, Any], secret_keys: set[str]) -> StackConfig:
    """Validate raw `taskstack:*` values (key without the project prefix) into a `StackConfig`.

    The credentials among `values` are checked (stored as secrets, their shape, required in prod)
    and left out of the result: the program reads them as secrets (`load_credentials`).
    """
    problems = [
        f"{PROJECT}:{key} holds a credential but is stored in plain text.\n"
        f"  fix: {set_command(key)}"
        for key in SECRET_KEYS
        if key in values and key not in secret_keys
    ]
    plain = {k: v for k, v in values.items() if k not in SECRET_KEYS}
    config, found = _validated(StackConfig, plain)
    problems += found
    problems += _validated(CredentialRules, {k: values[k] for k in SECRET_KEYS if k in values})[1]
    if config is not None and config.is_prod:
        problems += _prod_rules(values)
    if problems:
        raise StackConfigError(
            f"the {PROJECT} stack configuration is invalid:\n" + "\n".join(problems)
        )
    assert isinstance(config, StackConfig)
    return config


def load_stack_config() -> tuple[StackConfig, Credentials]:
    """Read and validate this stack's configuration; call before declaring any resource."""
    values, secret_keys = _project_values()
    config = parse_stack_config(values, secret_keys)
    return config, load_credentials(config)
