"""End-user authentication: signed bearer JWTs whose ``sub`` is the student id.

With ``GATEWAY_AUTH_MODE=jwt`` every ``/api`` and ``/v1`` request except the admin-key routes
(``/api/v1/admin``, ``/api/v1/ops``, ``/api/v1/costs``) must carry ``Authorization: Bearer <JWT>``:

* HS256 with ``GATEWAY_JWT_HS256_SECRET``, or RS256 with ``GATEWAY_JWT_PUBLIC_KEY_FILE`` (PEM) or a
  key of ``GATEWAY_JWT_JWKS_FILE`` chosen by the token's ``kid``. The algorithm is tied to the key
  type, so an RS256 public key can never be used as an HS256 secret.
* ``iss`` and ``aud`` must equal the configured ones; ``exp`` and ``sub`` are required; ``exp``,
  ``nbf`` and ``iat`` are checked with ``GATEWAY_JWT_LEEWAY_SECONDS`` of clock skew.
* ``sub`` must follow the shared user id rule (masterx_runtime.validation).
* role claim (``role`` by default): ``student`` (default) or ``teacher``. A teacher may READ the
  students its ``students`` claim lists or that belong to a group of its ``groups`` claim
  (groups resolved through ``GATEWAY_AUTH_GROUPS_FILE``); it writes only as itself.

Routes then call :func:`student_for` with the user id the request names: empty = the token's
own student; another student's id is 403 (a teacher's read of its student passes). Admin API
keys are a separate mechanism (services/gateway/auth.py) and are never accepted as tokens.
With ``GATEWAY_AUTH_MODE=off`` (local runs) no token is asked for and ids are taken as given.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from masterx_runtime.validation import user_id_problem
from services.gateway.config import GatewaySettings
from services.gateway.errors import GatewayError

log = logging.getLogger("masterx.gateway.identity")

#: Routes guarded by admin API keys instead of user tokens.
ADMIN_PREFIXES = ("/api/v1/admin", "/api/v1/ops", "/api/v1/costs")
GUARDED_PREFIXES = ("/api/", "/v1/")
MIN_HS256_SECRET_BYTES = 32
_STATE_KEY = "principal"


class Role(StrEnum):
    STUDENT = "student"
    TEACHER = "teacher"


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for."""

    subject: str
    role: Role
    students: frozenset[str] = frozenset()

    def may_read(self, student: str) -> bool:
        return student == self.subject or (self.role is Role.TEACHER and student in self.students)


class TokenRejected(Exception):
    """A token that does not verify; ``reason`` is safe to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _unauthenticated(message: str) -> GatewayError:
    return GatewayError(
        401,
        "UNAUTHENTICATED",
        message,
        service="gateway",
        headers={"WWW-Authenticate": 'Bearer realm="masterx", error="invalid_token"'},
    )


def settings_problems(cfg: GatewaySettings) -> list[str]:
    """What is wrong with the security settings (empty = fine); the gateway exits 2 on any."""
    from services.gateway.middleware import parse_networks

    problems = []
    try:
        parse_networks(cfg.trusted_proxies)
    except ValueError as exc:
        problems.append(f"GATEWAY_TRUSTED_PROXIES: {exc}")
    if cfg.auth_mode != "jwt":
        return problems
    if not cfg.jwt_issuer:
        problems.append("GATEWAY_JWT_ISSUER is required with GATEWAY_AUTH_MODE=jwt")
    if not cfg.jwt_audience:
        problems.append("GATEWAY_JWT_AUDIENCE is required with GATEWAY_AUTH_MODE=jwt")
    if not (cfg.jwt_hs256_secret or cfg.jwt_public_key_file or cfg.jwt_jwks_file):
        problems.append(
            "GATEWAY_AUTH_MODE=jwt needs a key: GATEWAY_JWT_HS256_SECRET, GATEWAY_JWT_PUBLIC_KEY_FILE or "
            "GATEWAY_JWT_JWKS_FILE"
        )
    if cfg.jwt_hs256_secret and len(cfg.jwt_hs256_secret.encode()) < MIN_HS256_SECRET_BYTES:
        problems.append(f"GATEWAY_JWT_HS256_SECRET must be at least {MIN_HS256_SECRET_BYTES} bytes")
    for name, path in (
        ("GATEWAY_JWT_PUBLIC_KEY_FILE", cfg.jwt_public_key_file),
        ("GATEWAY_JWT_JWKS_FILE", cfg.jwt_jwks_file),
        ("GATEWAY_AUTH_GROUPS_FILE", cfg.auth_groups_file),
    ):
        if path and not Path(path).is_file():
            problems.append(f"{name}={path!r}: no such file")
    if not problems:
        try:
            TokenVerifier(cfg)
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            problems.append(f"JWT keys: {exc}")
    return problems


def _load_groups(path: str) -> dict[str, frozenset[str]]:
    if not path:
        return {}
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise ValueError("GATEWAY_AUTH_GROUPS_FILE must map each group to a list of student ids")
    return {str(group): frozenset(str(s) for s in ids) for group, ids in raw.items()}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


class TokenVerifier:
    """Verifies tokens against the configured keys, issuer and audience."""

    def __init__(self, cfg: GatewaySettings) -> None:
        self.cfg = cfg
        self.secret = cfg.jwt_hs256_secret
        self.public_key: Any = None
        self.jwks: dict[str, Any] = {}
        if cfg.jwt_public_key_file:
            pem = Path(cfg.jwt_public_key_file).read_text(encoding="utf-8")
            self.public_key = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).prepare_key(pem)
        if cfg.jwt_jwks_file:
            keyset = jwt.PyJWKSet.from_json(Path(cfg.jwt_jwks_file).read_text(encoding="utf-8"))
            self.jwks = {k.key_id: k.key for k in keyset.keys if k.key_id}
        self.groups = _load_groups(cfg.auth_groups_file)

    def _key(self, header: dict[str, Any]) -> tuple[str, Any]:
        alg = header.get("alg")
        if alg == "HS256" and self.secret:
            return alg, self.secret
        if alg == "RS256":
            kid = header.get("kid")
            if isinstance(kid, str) and kid in self.jwks:
                return alg, self.jwks[kid]
            if self.public_key is not None:
                return alg, self.public_key
            raise TokenRejected("no key for this token (unknown kid)")
        raise TokenRejected(f"unsupported token algorithm {alg!r}")

    def verify(self, token: str) -> Principal:
        cfg = self.cfg
        try:
            header = jwt.get_unverified_header(token)
            alg, key = self._key(header)
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=cfg.jwt_audience,
                issuer=cfg.jwt_issuer,
                leeway=cfg.jwt_leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token expired") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("token audience is not this service") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("token issuer is not trusted") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("token signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"invalid token ({type(exc).__name__})") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or user_id_problem(subject):
            raise TokenRejected("token subject is not a valid student id")
        role_name = claims.get(cfg.jwt_role_claim, Role.STUDENT.value)
        try:
            role = Role(role_name)
        except ValueError:
            raise TokenRejected(f"unknown role {role_name!r}") from None
        students: set[str] = set()
        if role is Role.TEACHER:
            students.update(_strings(claims.get(cfg.jwt_students_claim)))
            for group in _strings(claims.get(cfg.jwt_groups_claim)):
                students.update(self.groups.get(group, ()))
        return Principal(subject, role, frozenset(students))


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str:
    for key, value in headers:
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def guarded(path: str) -> bool:
    return path.startswith(GUARDED_PREFIXES) and not path.startswith(ADMIN_PREFIXES)


class AuthMiddleware:
    """401 for guarded paths without a valid token; the verified :class:`Principal` goes in ``scope["state"]``."""

    def __init__(self, app: ASGIApp, verifier: TokenVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS" or not guarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        from services.gateway.middleware import send_error

        token = bearer_token(scope["headers"])
        if not token:
            await send_error(send, _unauthenticated("sign in: send `Authorization: Bearer <token>`"))
            return
        try:
            principal = self.verifier.verify(token)
        except TokenRejected as exc:
            log.info("token rejected", extra={"route": scope["path"], "reason": exc.reason})
            await send_error(send, _unauthenticated(exc.reason))
            return
        scope.setdefault("state", {})[_STATE_KEY] = principal
        await self.app(scope, receive, send)


def principal_of(request: Request) -> Principal | None:
    """The verified principal of the request; None when authentication is off."""
    return request.scope.get("state", {}).get(_STATE_KEY)


def resolve_student(principal: Principal | None, requested: str, *, field: str, write: bool) -> str:
    """The student a request may act on (pure decision; raises 403 GatewayError when it may not).

    No principal (auth off): ``requested`` as given. Otherwise: empty or own id = the token's
    subject; another id only for a teacher's read of one of its students.
    """
    if principal is None:
        return requested
    if not requested or requested == principal.subject:
        return principal.subject
    if not write and principal.may_read(requested):
        return requested
    what = "change" if write else "read"
    raise GatewayError(
        403,
        "PERMISSION_DENIED",
        f"{field}: this token may not {what} the data of student {requested!r}",
        service="gateway",
        field=field,
    )


def student_for(request: Request, requested: str, *, field: str = "user_id", write: bool) -> str:
    """:func:`resolve_student` for the request's principal."""
    return resolve_student(principal_of(request), requested, field=field, write=write)
