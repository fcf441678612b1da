"""Who a request is: rate-limit identity that cannot be spoofed, and signed student tokens (JWT).

The gateway runs on real uvicorn with its production uvicorn settings; the tokens are signed
by the tests (HS256 secret, RS256 PEM key, RS256 JWKS). Student-scoped answers come from the
real reasoning service on the real MongoDB-wire server; the other services are down, so a
request that passes authorization there answers 503 naming the service, one that does not
answers 401/403 before any call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from masterx_runtime.stores.mongo_store import MongoSettings
from masterx_runtime.stores.redis_store import RedisSettings
from masterx_runtime.testing.grpc_server import serving
from services.gateway.__main__ import uvicorn_config
from services.gateway.config import GatewaySettings
from services.gateway.errors import GatewayError
from services.gateway.identity import Principal, Role, TokenRejected, TokenVerifier, resolve_student, settings_problems
from services.gateway.middleware import client_address, parse_networks
from services.reasoning.app import ReasoningApp
from services.reasoning.config import ReasoningSettings
from tests.gateway.harness import gateway_settings, peers_at, running_gateway

SECRET = "test-secret-of-at-least-32-bytes-0123456789"
ISSUER, AUDIENCE = "https://id.school.example", "masterx"
ADMIN_KEY = "admin-key-0123456789abcdef"


# --- rate-limit identity ---------------------------------------------------------------------


def test_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() -> None:
    none = parse_networks([])
    proxies = parse_networks(["10.0.0.0/8", "127.0.0.1"])
    # no trusted proxies: headers are ignored entirely
    assert client_address("203.0.113.9", ["1.2.3.4"], none) == "203.0.113.9"
    # a peer that is not a trusted proxy cannot speak for others
    assert client_address("203.0.113.9", ["1.2.3.4"], proxies) == "203.0.113.9"
    # behind the proxy: the last hop that is not a proxy; what the client wrote to its left is never used
    assert client_address("10.1.2.3", ["6.6.6.6, 198.51.100.7"], proxies) == "198.51.100.7"
    assert client_address("10.1.2.3", ["6.6.6.6", "198.51.100.7, 10.9.9.9"], proxies) == "198.51.100.7"
    assert client_address("127.0.0.1", ["[2001:db8::1]:443"], proxies) == "2001:db8::1"
    assert client_address("127.0.0.1", [], proxies) == "127.0.0.1"
    assert client_address(None, [], proxies) == "unknown"
    with pytest.raises(ValueError, match="not an IP address"):
        parse_networks(["10.0.0.0/33"])


def test_uvicorn_never_rewrites_the_client_from_headers() -> None:
    config = uvicorn_config(object(), GatewaySettings())
    assert config.proxy_headers is False
    assert settings_problems(gateway_settings(trusted_proxies=("proxy.example",)))


async def _statuses(client: httpx.AsyncClient, forwarded: list[str]) -> list[int]:
    return [
        (await client.get("/api/v1/provider-health", headers={"X-Forwarded-For": xff})).status_code for xff in forwarded
    ]


async def test_spoofed_forwarded_for_gets_no_fresh_bucket(redis_url: str, redis_prefix: str) -> None:
    redis = RedisSettings(url=redis_url, key_prefix=redis_prefix)
    spoofed = [f"198.51.100.{i}" for i in range(5)]
    settings = gateway_settings(rate_limit_per_minute=3)
    async with running_gateway(settings, peers_at(), redis) as (url, _), httpx.AsyncClient(base_url=url) as c:
        assert await _statuses(c, spoofed) == [503, 503, 503, 429, 429]  # one bucket: the peer
    # Behind a trusted proxy (127.0.0.1 here) the client's own hops are left of the proxy's: still one bucket.
    redis = RedisSettings(url=redis_url, key_prefix=redis_prefix + "b:")
    settings = gateway_settings(rate_limit_per_minute=3, trusted_proxies=("127.0.0.1",))
    async with running_gateway(settings, peers_at(), redis) as (url, _), httpx.AsyncClient(base_url=url) as c:
        assert await _statuses(c, [f"{ip}, 192.0.2.10" for ip in spoofed]) == [503, 503, 503, 429, 429]
        assert await _statuses(c, ["192.0.2.11"]) == [503]  # another real client: its own bucket


# --- tokens ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("jwt")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem_file = folder / "public.pem"
    pem_file.write_bytes(public_pem)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwks_file = folder / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    groups_file = folder / "groups.json"
    groups_file.write_text(json.dumps({"class-7b": ["kid-2", "kid-3"]}))
    return {"private": private, "pem": pem_file, "public_pem": public_pem, "jwks": jwks_file, "groups": groups_file}


def token(
    sub: str = "kid-1", *, key: Any = SECRET, alg: str = "HS256", headers: dict[str, Any] | None = None, **claims: Any
) -> str:
    now = int(time.time())
    body = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers=headers)


def auth_settings(rsa_keys: dict[str, Any], **overrides: Any) -> GatewaySettings:
    fields: dict[str, Any] = {
        "auth_mode": "jwt",
        "jwt_hs256_secret": SECRET,
        "jwt_public_key_file": str(rsa_keys["pem"]),
        "jwt_jwks_file": str(rsa_keys["jwks"]),
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "auth_groups_file": str(rsa_keys["groups"]),
        "admin_api_keys": (ADMIN_KEY,),
    }
    return gateway_settings(**{**fields, **overrides})


def test_token_verification_cases(rsa_keys: dict[str, Any]) -> None:
    verifier = TokenVerifier(auth_settings(rsa_keys))
    assert verifier.verify(token()) == Principal("kid-1", Role.STUDENT)
    assert verifier.verify(token(key=rsa_keys["private"], alg="RS256")).subject == "kid-1"
    assert verifier.verify(token(key=rsa_keys["private"], alg="RS256", headers={"kid": "k1"})).subject == "kid-1"
    teacher = verifier.verify(token("t-9", role="teacher", students=["kid-1"], groups=["class-7b"]))
    assert teacher.role is Role.TEACHER and teacher.students == {"kid-1", "kid-2", "kid-3"}
    now = int(time.time())
    cases = {
        "token expired": token(exp=now - 120, iat=now - 600),
        "token audience is not this service": token(aud="another-app"),
        "token issuer is not trusted": token(iss="https://evil.example"),
        "token signature does not verify": token(key="another-secret-that-is-also-32-bytes-long!"),
        "lacks the 'exp' claim": token(exp=None),
        "not a valid student id": token("kid 1; drop"),
        "unknown role": token(role="admin"),
        "unsupported token algorithm": jwt.encode({"sub": "kid-1"}, None, algorithm="none"),  # type: ignore[arg-type]
    }
    for reason, bad in cases.items():
        with pytest.raises(TokenRejected, match=reason):
            verifier.verify(bad)
    # the RS256 public key used as an HS256 secret (algorithm confusion) never verifies
    confused = _hs256_with_key(
        rsa_keys["public_pem"], {"sub": "kid-1", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}
    )
    with pytest.raises(TokenRejected, match="signature does not verify"):
        verifier.verify(confused)
    with pytest.raises(TokenRejected, match="unsupported token algorithm"):
        TokenVerifier(auth_settings(rsa_keys, jwt_hs256_secret="")).verify(confused)


def _hs256_with_key(key: bytes, claims: dict[str, Any]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def test_student_scope_decisions() -> None:
    student = Principal("kid-1", Role.STUDENT)
    teacher = Principal("t-9", Role.TEACHER, frozenset({"kid-2"}))
    assert resolve_student(None, "anyone", field="user_id", write=True) == "anyone"  # auth off
    assert resolve_student(student, "", field="user_id", write=True) == "kid-1"  # filled from the token
    assert resolve_student(student, "kid-1", field="user_id", write=True) == "kid-1"
    assert resolve_student(teacher, "kid-2", field="user_id", write=False) == "kid-2"
    for principal, requested, write in ((student, "kid-2", False), (teacher, "kid-2", True), (teacher, "kid-5", False)):
        with pytest.raises(GatewayError) as caught:
            resolve_student(principal, requested, field="student_id", write=write)
        assert caught.value.status == 403 and caught.value.field == "student_id"


def test_auth_settings_are_checked_at_start(rsa_keys: dict[str, Any]) -> None:
    assert settings_problems(auth_settings(rsa_keys)) == []
    problems = settings_problems(gateway_settings(auth_mode="jwt", jwt_hs256_secret="short"))
    assert any("GATEWAY_JWT_ISSUER" in p for p in problems)
    assert any("GATEWAY_JWT_AUDIENCE" in p for p in problems)
    assert any("at least 32 bytes" in p for p in problems)
    assert settings_problems(gateway_settings()) == []  # off by default: nothing required


@pytest.fixture
async def school(mongo_url: str, mongo_db_name: str, rsa_keys: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    """Real reasoning service (practice, mastery) behind a gateway with JWT sign-in on."""
    app = ReasoningApp(
        ReasoningSettings(), mongo=MongoSettings(url=mongo_url, database=mongo_db_name), peers=peers_at()
    )
    async with serving(app) as (server, _):
        peers = peers_at(reasoning=f"127.0.0.1:{server.port}")
        async with running_gateway(auth_settings(rsa_keys), peers) as (url, _), httpx.AsyncClient(base_url=url) as c:
            yield c


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


MASTERY = {"skills": [{"skill": "fiveComplements.4=5-1", "level": "practicing"}]}


async def test_students_see_and_change_only_their_own_data(school: httpx.AsyncClient, rsa_keys: dict[str, Any]) -> None:
    c = school
    kid1, kid2 = bearer(token("kid-1")), bearer(token("kid-2", key=rsa_keys["private"], alg="RS256"))
    # no token, bad tokens: 401 before anything runs
    now = int(time.time())
    for headers in (
        {},
        bearer("not-a-jwt"),
        bearer(token(exp=now - 120, iat=now - 600)),
        bearer(token(aud="another-app")),
        bearer(token(key="another-secret-that-is-also-32-bytes-long!")),
        {"X-API-Key": ADMIN_KEY},  # admin keys are not user tokens
    ):
        resp = await c.get("/api/v1/practice/students/kid-1/mastery", headers=headers)
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.json()["error"]["code"] == "UNAUTHENTICATED"
        assert resp.headers["www-authenticate"].startswith("Bearer")
    # own data: read and write
    put = await c.put("/api/v1/practice/students/kid-1/mastery", json=MASTERY, headers=kid1)
    assert put.status_code == 200, put.text
    got = await c.get("/api/v1/practice/students/kid-1/mastery", headers=kid1)
    assert got.status_code == 200 and got.json()["skills"][0]["level"] == "practicing"
    # omitted student id = the token's student
    plan = await c.post("/api/v1/practice/plan", json={"slots": 2, "seed": 1}, headers=kid1)
    assert plan.status_code == 200, plan.text
    # another student's id: 403 naming the field, for reads and writes, in paths and bodies
    for method, path, body in (
        ("GET", "/api/v1/practice/students/kid-1/mastery", None),
        ("PUT", "/api/v1/practice/students/kid-1/mastery", MASTERY),
        ("POST", "/api/v1/practice/plan", {"student_id": "kid-1"}),
        ("POST", "/api/v1/chat", {"message": "hi", "user_id": "kid-1"}),
        ("POST", "/api/v1/chat/stream", {"message": "hi", "user_id": "kid-1"}),
        ("POST", "/api/v1/emotion", {"text": "hi", "user_id": "kid-1"}),
        ("GET", "/api/v1/students/kid-1/trajectory", None),
        ("POST", "/api/v1/outcomes", {"turn_id": "t1", "user_id": "kid-1", "helped": True}),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "masterx", "user": "kid-1", "messages": [{"role": "user", "content": "x"}]},
        ),
    ):
        resp = await c.request(method, path, json=body, headers=kid2)
        assert resp.status_code == 403, (path, resp.text)
        err = resp.json()["error"]
        assert err["code"] == "PERMISSION_DENIED" and err["field"] in ("user_id", "student_id", "user"), err
    # kid-2's own chat passes authorization (then meets the router being down)
    assert (await c.post("/api/v1/chat", json={"message": "hi"}, headers=kid2)).status_code == 503
    # public, not student-scoped data still needs a signed-in user; admin routes keep admin keys
    assert (await c.get("/api/v1/provider-health")).status_code == 401
    assert (await c.get("/api/v1/admin/benchmark-runs/r1", headers=kid1)).status_code == 401
    assert (await c.get("/api/v1/admin/benchmark-runs/r1", headers={"X-API-Key": ADMIN_KEY})).status_code == 503


async def test_teacher_reads_its_students_but_writes_only_as_itself(school: httpx.AsyncClient) -> None:
    c = school
    assert (
        await c.put("/api/v1/practice/students/kid-2/mastery", json=MASTERY, headers=bearer(token("kid-2")))
    ).status_code == 200
    teacher = bearer(token("t-9", role="teacher", groups=["class-7b"]))
    other_teacher = bearer(token("t-8", role="teacher", students=["kid-7"]))
    read = await c.get("/api/v1/practice/students/kid-2/mastery", headers=teacher)
    assert read.status_code == 200 and read.json()["skills"], read.text
    assert (await c.get("/api/v1/practice/students/kid-2/mastery", headers=other_teacher)).status_code == 403
    write = await c.put("/api/v1/practice/students/kid-2/mastery", json=MASTERY, headers=teacher)
    assert write.status_code == 403 and write.json()["error"]["field"] == "student_id"


def test_off_by_default_and_on_in_the_prod_overlay() -> None:
    assert GatewaySettings().auth_mode == "off"
    prod = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "overlays" / "prod"
    text = "\n".join(p.read_text() for p in prod.rglob("*.yaml"))
    assert "GATEWAY_AUTH_MODE=jwt" in text
