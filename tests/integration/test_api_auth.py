"""Bearer tokens: missing, malformed, expired, badly signed, wrong algorithm, wrong issuer or
audience, RS256 with the identity service's public key; production refuses the dev secret."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aftersales.api.app import create_app
from aftersales.api.auth import ConfigError, TokenVerifier, issue_token
from aftersales.settings import DEV_JWT_SECRET, Settings
from tests.integration.api_support import SECRET, live_api

POLICIES = "/api/v1/policies"


def _rsa_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def _claims(**extra: object) -> dict[str, object]:
    now = datetime.now(UTC)
    return {"sub": "b1", "role": "buyer", "iat": now, "exp": now + timedelta(hours=1), **extra}


def _unauthenticated(r: httpx.Response, fragment: str) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"].startswith("Bearer")
    body = r.json()
    assert body["code"] == "unauthenticated" and body["status"] == 401
    assert fragment in body["detail"], body["detail"]


def test_hs256_tokens(sqlite_url: str, tmp_path: Path) -> None:
    with live_api(sqlite_url, tmp_path) as live:
        c = live.client()
        _unauthenticated(c.get(POLICIES), "Authorization: Bearer")
        _unauthenticated(c.get(POLICIES, headers={"Authorization": "Basic Yjox"}),
                         "Authorization: Bearer")
        _unauthenticated(c.get(POLICIES, headers={"Authorization": "Bearer not.a.jwt"}),
                         "not valid")

        def call(token: str) -> httpx.Response:
            return c.get(POLICIES, headers={"Authorization": f"Bearer {token}"})

        assert call(live.token("buyer", "b1")).status_code == 200
        expired = issue_token(live.settings, "buyer", "b1", ttl=timedelta(minutes=5),
                              now=datetime.now(UTC) - timedelta(hours=2))
        _unauthenticated(call(expired), "expired")
        forged = jwt.encode(_claims(), "another-secret-of-at-least-32-bytes!!", "HS256")
        _unauthenticated(call(forged), "signature")
        unsigned = jwt.encode(_claims(), None, algorithm="none")
        _unauthenticated(call(unsigned), "HS256")
        _unauthenticated(call(jwt.encode(_claims(role="system"), SECRET, "HS256")), "role")
        _unauthenticated(call(jwt.encode(_claims(role="admin"), SECRET, "HS256")), "role")
        no_exp = {k: v for k, v in _claims().items() if k != "exp"}
        _unauthenticated(call(jwt.encode(no_exp, SECRET, "HS256")), "'exp'")
        _unauthenticated(call(jwt.encode(_claims(sub="b 1; drop"), SECRET, "HS256")), "sub")
        _unauthenticated(call(jwt.encode(_claims(seller="s1"), SECRET, "HS256")), "seller")


def test_issuer_and_audience_are_checked_when_configured(sqlite_url: str,
                                                         tmp_path: Path) -> None:
    with live_api(sqlite_url, tmp_path, jwt_issuer="https://id.example.com",
                  jwt_audience="aftersales") as live:
        c = live.client()

        def call(token: str) -> httpx.Response:
            return c.get(POLICIES, headers={"Authorization": f"Bearer {token}"})

        assert call(live.token("staff", "x1")).status_code == 200
        _unauthenticated(call(jwt.encode(_claims(), SECRET, "HS256")), "iss")
        _unauthenticated(call(jwt.encode(_claims(iss="https://id.example.com"), SECRET,
                                         "HS256")), "aud")
        _unauthenticated(call(jwt.encode(_claims(aud="billing",
                                                 iss="https://id.example.com"),
                                         SECRET, "HS256")), "aud")
        _unauthenticated(call(jwt.encode(_claims(aud="aftersales", iss="https://evil.example"),
                                         SECRET, "HS256")), "iss")


def test_rs256_with_the_identity_services_public_key(sqlite_url: str, tmp_path: Path) -> None:
    private, public = _rsa_pair()
    key_file = tmp_path / "identity.pub.pem"
    key_file.write_text(public, encoding="utf-8")
    with live_api(sqlite_url, tmp_path, jwt_algorithm="RS256",
                  jwt_public_key=str(key_file)) as live:
        c = live.client()

        def call(token: str) -> httpx.Response:
            return c.get(POLICIES, headers={"Authorization": f"Bearer {token}"})

        good = issue_token(live.settings, "operator", "op1", private_key=private)
        assert call(good).status_code == 200
        other_private, _ = _rsa_pair()
        _unauthenticated(call(jwt.encode(_claims(), other_private, "RS256")), "signature")
        # Algorithm confusion: an HS256 token keyed with the public key is refused.
        _unauthenticated(call(jwt.encode(_claims(), SECRET, "HS256")), "RS256")
    assert TokenVerifier(Settings(jwt_algorithm="RS256", jwt_public_key=public)).verify(
        jwt.encode(_claims(), private, "RS256")).sub == "b1"


def test_production_refuses_the_development_secret(sqlite_url: str, tmp_path: Path) -> None:
    prod = Settings(database_url=sqlite_url, evidence_dir=str(tmp_path / "e"),
                    environment="production")
    with pytest.raises(ConfigError, match="development JWT secret"):
        create_app(prod)
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        create_app(Settings(database_url=sqlite_url, environment="production",
                            jwt_secret="short"))
    with pytest.raises(ConfigError, match="RS256 needs"):
        TokenVerifier(Settings(jwt_algorithm="RS256"))
    with pytest.raises(ConfigError, match="HS256, RS256"):
        TokenVerifier(Settings(jwt_algorithm="none"))
    assert Settings().jwt_secret == DEV_JWT_SECRET  # development works out of the box
    env = {**os.environ, "AFTERSALES_ENV": "production", "AFTERSALES_DATABASE_URL": sqlite_url}
    env.pop("AFTERSALES_JWT_SECRET", None)
    exe = Path(sys.executable).with_name("aftersales")
    serve = subprocess.run([str(exe), "serve", "--port", "1"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert serve.returncode == 2 and "development JWT secret" in serve.stderr
    issue = subprocess.run([str(exe), "token", "issue", "--role", "buyer", "--sub", "b1"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert issue.returncode == 2 and "development JWT secret" in issue.stderr


def test_token_issue_prints_a_token_the_server_accepts(tmp_path: Path) -> None:
    env = {**os.environ, "AFTERSALES_JWT_SECRET": SECRET}
    env.pop("AFTERSALES_ENV", None)
    exe = Path(sys.executable).with_name("aftersales")
    out = subprocess.run([str(exe), "token", "issue", "--role", "seller", "--sub", "clerk-7",
                          "--seller", "s1", "--ttl", "2h"], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    principal = TokenVerifier(Settings(jwt_secret=SECRET)).verify(out)
    assert (principal.role.value, principal.sub, principal.seller) == ("seller", "clerk-7", "s1")
    assert str(principal.actor) == "seller:s1"
    claims = jwt.decode(out, SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 7200
    bad = subprocess.run([str(exe), "token", "issue", "--role", "system", "--sub", "x"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
