"""Settings shared by the HTTP sinks: URL (literal or secret), TLS, proxy, extra headers."""
from __future__ import annotations

import os
from collections.abc import Mapping

from alerts.errors import AlertsConfigError
from alerts.http import ProxyOptions, TLSOptions, validate_url
from alerts.secrets import Secret, read_secret
from alerts.sinks.base import check_keys
from alerts.units import parse_bool

URL_KEYS = {"url", "url_env", "url_file"}
TLS_KEYS = {"ca_file", "insecure_skip_verify", "cert_file", "key_file"}
PROXY_KEYS = {"proxy", "proxy_env", "proxy_file"}


def parse_url(raw: Mapping[str, object], where: str, env: Mapping[str, str] | None,
              *, allow_literal: bool, key: str = "url") -> Secret:
    """The sink URL from `url_env`/`url_file` (or a literal `url` where allowed);
    `key` names another URL setting read the same way (`proxy`)."""
    if allow_literal and key in raw:
        if f"{key}_env" in raw or f"{key}_file" in raw:
            raise AlertsConfigError(f"{where}: give only one of {key}, {key}_env, {key}_file")
        if not isinstance(raw[key], str):
            raise AlertsConfigError(f"{where}: '{key}' must be a string")
        secret = Secret(raw[key], f"config '{key}'")
    else:
        secret = read_secret(raw, key, where, env)
        assert secret is not None
    validate_url(secret.reveal(), where if key == "url" else f"{where}: {key}")
    return secret


def parse_proxy(raw: Mapping[str, object], where: str,
                env: Mapping[str, str] | None) -> ProxyOptions:
    """`proxy:` (a URL, or false for none), `proxy_env:` or `proxy_file:`; unset: the
    environment's HTTPS_PROXY/HTTP_PROXY/NO_PROXY."""
    if raw.get("proxy") is False:
        if "proxy_env" in raw or "proxy_file" in raw:
            raise AlertsConfigError(f"{where}: give only one of proxy, proxy_env, proxy_file")
        return ProxyOptions(direct=True)
    if not PROXY_KEYS & set(raw):
        return ProxyOptions()
    return ProxyOptions(url=parse_url(raw, where, env, allow_literal=True, key="proxy"))


def parse_tls(raw: object, where: str) -> TLSOptions:
    """The `tls:` mapping of an HTTP sink."""
    if raw is None:
        return TLSOptions()
    if not isinstance(raw, Mapping):
        raise AlertsConfigError(f"{where}: 'tls' must be a mapping")
    where = f"{where}: tls"
    check_keys(raw, TLS_KEYS, where)
    for key in ("ca_file", "cert_file", "key_file"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not os.path.isfile(value)):
            raise AlertsConfigError(f"{where}: {key} {value!r} is not a readable file")
    if raw.get("key_file") and not raw.get("cert_file"):
        raise AlertsConfigError(f"{where}: key_file needs cert_file")
    tls = TLSOptions(
        ca_file=raw.get("ca_file"),  # type: ignore[arg-type]
        insecure_skip_verify=parse_bool(raw.get("insecure_skip_verify", False),
                                        f"{where}: insecure_skip_verify"),
        cert_file=raw.get("cert_file"),  # type: ignore[arg-type]
        key_file=raw.get("key_file"),  # type: ignore[arg-type]
    )
    tls.ssl_context(where)  # fail early on unreadable or mismatched certificates
    return tls


def parse_headers(raw: Mapping[str, object], where: str,
                  env: Mapping[str, str] | None) -> dict[str, Secret | str]:
    """`headers:` (literal values) and `headers_env:` (header -> environment variable)."""
    env = os.environ if env is None else env
    headers: dict[str, Secret | str] = {}
    literal = raw.get("headers") or {}
    if not isinstance(literal, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in literal.items()):
        raise AlertsConfigError(f"{where}: 'headers' must map header names to strings")
    headers.update(literal)
    from_env = raw.get("headers_env") or {}
    if not isinstance(from_env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in from_env.items()):
        raise AlertsConfigError(f"{where}: 'headers_env' must map header names to variable names")
    for header, var in from_env.items():
        value = env.get(var)
        if not value:
            raise AlertsConfigError(f"{where}: environment variable {var} (header {header}) "
                                    "is not set or empty")
        headers[header] = Secret(value, f"env {var}")
    return headers
