"""The stack's configuration: one typed, validated model, read once before any resource.

`model`: every `taskstack:*` key (`StackConfig`); `credentials`: the secrets' shape and values
(`Credentials`); `load`: reading them from the engine, with one message per problem.
"""

from infra.config.credentials import (
    DEV_ONLY_POSTGRES_PASSWORD,
    PROD_REQUIRED_SECRETS,
    SECRET_KEYS,
    TLS_KEYS,
    CredentialRules,
    Credentials,
    load_credentials,
)
from infra.config.formats import provider_cpus
from infra.config.load import (
    FIELD_BY_KEY,
    StackConfigError,
    load_stack_config,
    parse_stack_config,
    set_command,
)
from infra.config.model import (
    APP_ENV_KEYS,
    PROJECT,
    LogLevel,
    ProxyAccessLog,
    RestartPolicy,
    StackConfig,
    Target,
)

__all__ = [
    "APP_ENV_KEYS",
    "DEV_ONLY_POSTGRES_PASSWORD",
    "FIELD_BY_KEY",
    "PROD_REQUIRED_SECRETS",
    "PROJECT",
    "SECRET_KEYS",
    "TLS_KEYS",
    "CredentialRules",
    "Credentials",
    "LogLevel",
    "ProxyAccessLog",
    "RestartPolicy",
    "StackConfig",
    "StackConfigError",
    "Target",
    "load_credentials",
    "load_stack_config",
    "parse_stack_config",
    "provider_cpus",
    "set_command",
]
