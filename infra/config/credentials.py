"""The stack's credentials: their shape (`CredentialRules`), then their values as Pulumi secrets.

Credentials are not fields of `StackConfig`: their shape is checked with the other keys (the plain
value is read once for that and dropped), then they travel as secret `Output`s from
`Config.require_secret`/`get_secret` (`Credentials`). Only the SDK's public API is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator
from pydantic.alias_generators import to_camel

from infra.config.model import PROJECT, StackConfig

# Keys whose value is a credential: read as secrets, never rendered in plain text.
SECRET_KEYS = (
    "postgresPassword",
    "redisPassword",
    "flowerBasicAuth",
    "tlsCertificate",
    "tlsKey",
    "alertWebhookUrl",
    "initialApiKey",
)
# Required in prod; in dev the program falls back to the documented dev-only values below. TLS is
# optional: with both keys set the proxy serves HTTPS (docs/infra.md, "The front door").
PROD_REQUIRED_SECRETS = ("postgresPassword", "redisPassword", "flowerBasicAuth")
TLS_KEYS = ("tlsCertificate", "tlsKey")

# Dev-only PostgreSQL password, used when a dev stack sets none. The dev database is published on
# 127.0.0.1 only; a prod stack refuses to start with this value (`_prod_rules` in load.py).
DEV_ONLY_POSTGRES_PASSWORD = "taskstack-dev-only-password"  # noqa: S105 - documented dev default


class CredentialRules(BaseModel):
    """The shape each credential must have. Validation only: the plain values are not kept."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    postgres_password: SecretStr | None = None
    redis_password: SecretStr | None = None
    flower_basic_auth: SecretStr | None = None
    tls_certificate: SecretStr | None = None
    tls_key: SecretStr | None = None
    alert_webhook_url: SecretStr | None = None
    initial_api_key: SecretStr | None = None

    @field_validator("initial_api_key")
    @classmethod
    def _api_key(cls, value: SecretStr | None) -> SecretStr | None:
        # The app's own rule for a key (app/storage/api_keys.py): long, printable, no spaces.
        if value is not None and not re.fullmatch(r"[!-~]{32,256}", value.get_secret_value()):
            raise ValueError("must be 32 to 256 printable characters without spaces")
        return value

    @field_validator("postgres_password", "redis_password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters long")
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _basic_auth(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        for pair in value.get_secret_value().split(","):
            user, sep, password = pair.partition(":")
            if not user or not sep or len(password) < 16:
                raise ValueError("must be user:password (password at least 16 characters)")
        return value

    @field_validator("tls_certificate")
    @classmethod
    def _certificate(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and "-----BEGIN CERTIFICATE-----" not in value.get_secret_value():
            raise ValueError("must be a PEM certificate chain (-----BEGIN CERTIFICATE-----)")
        return value

    @field_validator("tls_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        text = value.get_secret_value() if value is not None else ""
        if value is not None and not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text):
            raise ValueError("must be a PEM private key (-----BEGIN PRIVATE KEY-----)")
        return value

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^https?://\S+$", value.get_secret_value()):
            raise ValueError("must be the http(s) URL Alertmanager posts alerts to")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> CredentialRules:
        if (self.tls_certificate is None) != (self.tls_key is None):
            missing = "tlsKey" if self.tls_key is None else "tlsCertificate"
            raise ValueError(f"{missing}: TLS needs both tlsCertificate and tlsKey")
        return self


@dataclass(frozen=True)
class Credentials:
    """The stack's credentials as Pulumi secrets. Dev falls back to the dev-only database password
    and runs Redis and Flower without one when none is set; prod requires all three."""

    postgres_password: pulumi.Output[str]
    redis_password: pulumi.Output[str] | None
    flower_basic_auth: pulumi.Output[str] | None
    # The proxy's certificate chain and key (both or neither): HTTPS on the API port when set.
    tls_certificate: pulumi.Output[str] | None = None
    tls_key: pulumi.Output[str] | None = None
    # Where Alertmanager posts alerts (its webhook receiver); without it alerts stay in its UI.
    alert_webhook_url: pulumi.Output[str] | None = None
    # A first API key, stored hashed by the migration as `initial` (docs/app.md, "API keys").
    initial_api_key: pulumi.Output[str] | None = None


def load_credentials(config: StackConfig) -> Credentials:
    """The credentials as secret `Output`s; call after `parse_stack_config` accepted them."""
    bag = pulumi.Config(PROJECT)
    optional = {
        "tls_certificate": bag.get_secret("tlsCertificate"),
        "tls_key": bag.get_secret("tlsKey"),
        "alert_webhook_url": bag.get_secret("alertWebhookUrl"),
        "initial_api_key": bag.get_secret("initialApiKey"),
    }
    if config.is_prod:
        return Credentials(
            postgres_password=bag.require_secret("postgresPassword"),
            redis_password=bag.require_secret("redisPassword"),
            flower_basic_auth=bag.require_secret("flowerBasicAuth"),
            **optional,
        )
    return Credentials(
        postgres_password=bag.get_secret("postgresPassword", DEV_ONLY_POSTGRES_PASSWORD),
        redis_password=bag.get_secret("redisPassword"),
        flower_basic_auth=bag.get_secret("flowerBasicAuth"),
        **optional,
    )
