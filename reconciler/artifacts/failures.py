"""Error translation for registry calls: requests' exceptions and the registry's HTTP answers as our errors.

Kept apart from ``registry`` so that the one place deciding terminal (Stalled, AuthError, NotFound) versus
retryable (Transient) for an HTTP answer reads on its own; messages carry the registry's error codes,
never its free text.
"""

from __future__ import annotations

import json
from typing import Any

import requests

from reconciler.artifacts.reference import Reference
from reconciler.credentials import Credential
from reconciler.errors import AuthError, NotFound, ReconcilerError, Stalled, Transient


def translate(exc: requests.RequestException, what: str, ref: Reference) -> ReconcilerError:
    if isinstance(exc, requests.exceptions.SSLError):
        return Stalled(
            f"{what}: TLS verification failed for registry {ref.registry} "
            "(give the registry a caFile, or skipTLSVerify for a test registry)"
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return Transient(f"{what}: registry {ref.registry} timed out")
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.ChunkedEncodingError):
        return Transient(f"{what}: cannot reach registry {ref.registry} ({type(exc).__name__})")
    return Transient(f"{what}: request to registry {ref.registry} failed ({type(exc).__name__})")


def check_response(response: requests.Response, what: str, ref: Reference, credential: Credential | None) -> None:
    code = response.status_code
    if code < 300:
        return
    detail = error_codes(response)
    if code in (401, 403):
        who = f"the credentials of {credential}" if credential else "anonymous access"
        raise AuthError(f"{what}: registry {ref.registry} refused {who} (HTTP {code}{detail})")
    if code == 404:
        raise NotFound(f"{what}: not found in registry {ref.registry} (HTTP 404{detail})")
    if code == 429 or code >= 500:
        raise Transient(f"{what}: registry {ref.registry} answered HTTP {code}{detail}")
    raise Stalled(f"{what}: registry {ref.registry} answered HTTP {code}{detail}")


def unprefixed(text: str, what: str) -> str:
    """``text`` without a leading ``what: `` (the attempt's own message already names the operation)."""
    return text[len(what) + 2:] if text.startswith(f"{what}: ") else text


MAX_SMALL_BODY = 64 * 1024  # error bodies and token answers: a registry may send anything


def small_json(response: requests.Response, limit: int = MAX_SMALL_BODY) -> object:
    """The JSON body of an answer that should be small, read at most ``limit`` bytes (None past it or when
    it is not JSON): an endless error body or token answer must not fill memory."""
    try:
        raw = b""
        for chunk in response.iter_content(16 * 1024):
            raw += chunk
            if len(raw) > limit:
                response.close()
                return None
        return json.loads(raw)
    except (ValueError, requests.RequestException):
        return None


def error_codes(response: requests.Response) -> str:
    """The registry's error codes (e.g. MANIFEST_UNKNOWN), never its free text."""
    try:
        if "json" not in response.headers.get("Content-Type", ""):
            return ""
        doc: Any = small_json(response)
        codes = [str(e.get("code")) for e in doc.get("errors", []) if isinstance(e, dict) and e.get("code")]
    except (ValueError, AttributeError, requests.RequestException):
        return ""
    return f": {', '.join(codes)}" if codes else ""
