"""Bearer API keys: off when none are configured; else 401 without a key and 403 for an unknown one."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi.security import HTTPAuthorizationCredentials

from mig_annotator.service.errors import Forbidden, Unauthorized


@dataclass(frozen=True, slots=True)
class Principal:
    """Who called: the id of their API key (None when auth is off). The key itself is never kept."""

    key_id: str | None


class ApiKeyAuthenticator:
    def __init__(self, keys_to_ids: dict[str, str]) -> None:
        self._keys = [(key.encode(), key_id) for key, key_id in keys_to_ids.items()]

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def authenticate(self, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        if not self._keys:
            return Principal(key_id=None)
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
        given = credentials.credentials.encode()
        match = None
        for key, key_id in self._keys:  # compare with every key, in constant time each
            if hmac.compare_digest(given, key):
                match = key_id
        if match is None:
            raise Forbidden("the API key is not valid")
        return Principal(key_id=match)
