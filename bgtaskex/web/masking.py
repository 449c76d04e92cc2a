"""Params as the dashboard shows them: values under keys that look like secrets masked
(`password`, `token`, `secret`, `key`, ...; nested objects and lists too), and every
string passed through `mask_secrets` (a database URL with its password in a param).

Pages and the JSON API both show params through `mask_params`, unless the setting
`web_show_secrets = true`. It errs on the side of masking, as `mask_secrets` does:
`unique_key` or `max_tokens` go too."""

from __future__ import annotations

import re
from typing import Any

from ..urls import mask_secrets

MASK = "***"

#: Found anywhere in the key, whatever the case: `dbPassword`, `GITHUB_TOKEN`, `api_key`.
_ANYWHERE = ("password", "passwd", "passphrase", "secret", "token", "apikey", "api_key")
#: Found as a word of the key (split at `_`, `-`, `.`, blanks and camelCase humps): `key`,
#: `private_key`, `accessKey`; not `keys`, `monkey` nor `keyword`.
_WORDS = frozenset({"key", "pwd", "credential", "credentials", "auth"})
_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")


def secret_key(key: str) -> bool:
    """Whether a params key looks like it holds a secret."""
    lowered = key.lower()
    if any(word in lowered for word in _ANYWHERE):
        return True
    words = _SEPARATORS.split(_HUMP.sub("_", key).lower())
    return any(word in _WORDS for word in words)


def mask_params(value: Any, *, keys: bool = True) -> Any:
    """`value` (an action's params, any JSON) with the values under secret-looking keys
    replaced by `***` at any depth (unless not `keys`: `web_show_secrets`), and
    passwords in strings (a URL's) masked always, as in every output of bgtaskex."""
    if isinstance(value, dict):
        return {
            key: MASK if keys and secret_key(str(key)) else mask_params(item, keys=keys)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [mask_params(item, keys=keys) for item in value]
    if isinstance(value, str):
        return mask_secrets(value)
    return value


def mask_task_dict(task: dict[str, Any], *, keys: bool = True) -> dict[str, Any]:
    """A `views.task_dict` with the params of each of its actions masked."""
    actions = [
        {**action, "params": mask_params(action["params"], keys=keys)} for action in task["actions"]
    ]
    return {**task, "actions": actions}
