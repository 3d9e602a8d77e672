"""The oras-py Registry we talk through: one request per call, basic or bearer auth, and a timeout on each.

Kept apart from ``registry`` because it is the part that knows oras-py's and requests' internals (the
``do_request`` override, the 401 challenge and the token realm); ``RegistryClient`` only hands it a
deadline-aware timeout and the function that raises our errors for a failed answer.  ``is_loopback``
lives here because the token realm's plain-HTTP rule needs it as much as the client's choice of transport.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import oras.auth.utils
import oras.container
import oras.provider
import requests
from requests.adapters import HTTPAdapter

from reconciler.artifacts.failures import small_json
from reconciler.credentials import Credential
from reconciler.errors import AuthError, Stalled, Transient


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _TimeoutAdapter(HTTPAdapter):
    """Gives a timeout to requests that oras-py sends without one (its token requests)."""

    def __init__(self, timeout: Callable[[], tuple[float, float]]) -> None:
        super().__init__(pool_connections=4, pool_maxsize=16)
        self._timeout = timeout

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None, **kwargs: Any
    ) -> requests.Response:
        return super().send(request, stream=stream, timeout=timeout or self._timeout(), **kwargs)


class OrasSession(oras.provider.Registry):  # type: ignore[misc]
    """oras-py's Registry with one request per call (no hidden retries) and basic or bearer auth."""

    def __init__(self, hostname: str, scheme: str, verify: bool | str, credential: Credential | None,
                 timeout: Callable[[], tuple[float, float]],
                 hard_fail: Callable[[requests.Response], None], plain_http: bool = False) -> None:
        super().__init__(hostname=hostname, insecure=scheme == "http", tls_verify=verify,
                         auth_backend="token")
        self._credential = credential
        self._timeout = timeout
        self._plain_http = plain_http  # the registry entry says plainHTTP: true
        # Raises our error for refused credentials and server errors, which oras-py would otherwise
        # turn into bare ValueErrors deep inside push.
        self._hard_fail = hard_fail
        self._authorization: str | None = None
        adapter = _TimeoutAdapter(timeout)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def do_request(self, url: str, method: str = "GET", data: Any = None,
                   headers: dict[str, str] | None = None, json: Any = None,
                   stream: bool = False) -> requests.Response:
        headers = dict(headers or {})
        if self._authorization and "Authorization" not in headers:
            headers["Authorization"] = self._authorization
        response = self._send(method, url, data, json, headers, stream)
        if response.status_code == 401:
            try:
                answer = self._answer(response.headers.get("Www-Authenticate", ""))
            except BaseException:
                response.close()
                raise
            if answer is not None:
                response.close()
                self._authorization = headers["Authorization"] = answer
                if hasattr(data, "seek"):
                    data.seek(0)
                response = self._send(method, url, data, json, headers, stream)
        self._hard_fail(response)
        return response

    def _send(self, method: str, url: str, data: Any, json: Any, headers: dict[str, str],
              stream: bool) -> requests.Response:
        response: requests.Response = self.session.request(
            method, url, data=data, json=json, headers=headers, stream=stream,
            verify=self._tls_verify, timeout=self._timeout(), allow_redirects=True,
        )
        return response

    def _answer(self, challenge: str) -> str | None:
        """The Authorization header answering a 401 challenge, or None when we have nothing to offer."""
        cred = self._credential
        scheme = challenge.split(" ", 1)[0].lower()
        secret = (cred.password or cred.token) if cred else None
        if scheme == "basic":
            if cred is None or not cred.username or not secret:
                return None
            return "Basic " + base64.b64encode(f"{cred.username}:{secret}".encode()).decode()
        if scheme != "bearer":
            return None
        if cred is not None and cred.token and not cred.username:
            return f"Bearer {cred.token}"
        basic = oras.auth.utils.get_basic_auth(cred.username, secret) if cred and cred.username and secret else None
        token = self._token(oras.auth.utils.parse_auth_header(challenge), basic)
        return f"Bearer {token}" if token else None

    def _token(self, challenge: Any, basic: str | None) -> str | None:
        """A token from the challenge's realm, or None when the realm refuses us.

        Our own request rather than oras-py's ``request_token``, which answers None for every failure:
        a realm that is down or answers 5xx must be retried, not reported as refused credentials."""
        if not challenge.realm:
            return None
        parts = urlsplit(challenge.realm)
        realm = parts.netloc or challenge.realm
        if basic and parts.scheme != "https" and not (is_loopback(parts.hostname or "") or self._plain_http):
            # The realm comes from the registry's answer; a password must not follow it over plain HTTP.
            name = self._credential.name if self._credential else "?"
            raise AuthError(f"refusing to send the credentials of {name!r} over plain HTTP to token realm {realm} "
                            "(use an https realm, or plainHTTP: true on the registry entry)")
        params = {k: v for k, v in (("service", challenge.service), ("scope", challenge.scope)) if v}
        headers = {"Accept": "application/json"}
        if basic:
            headers["Authorization"] = f"Basic {basic}"
        try:
            response = self.session.get(challenge.realm, params=params, headers=headers, stream=True,
                                        verify=self._tls_verify, timeout=self._timeout())
        except requests.exceptions.SSLError:
            raise Stalled(f"TLS verification failed for token realm {realm} "
                          "(give the registry a caFile that also vouches for its token realm)") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise Transient(f"cannot reach token realm {realm} ({type(exc).__name__})") from None
        with response:
            code = response.status_code
            if code in (401, 403):
                return None  # the registry's 401 that follows names whose credentials were refused
            if code == 429 or code >= 500:
                raise Transient(f"token realm {realm} answered HTTP {code}")
            body = small_json(response) if code == 200 else None
            token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise Stalled(f"token realm {realm} answered HTTP {code} without a token")
            return token
