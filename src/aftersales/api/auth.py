"""Bearer JWTs from the marketplace's identity service: who is calling, in which role.

Tokens are verified with PyJWT: HS256 with a shared secret (`AFTERSALES_JWT_SECRET`) or RS256
with the identity service's public key (`AFTERSALES_JWT_PUBLIC_KEY`). `exp`, `sub` and `role` are
required; `iss` and `aud` are checked when configured. A seller's token may carry `seller`, the
shop it acts for (default: `sub`). `issue_token` signs development tokens (`aftersales token
issue`); production refuses the development secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

from aftersales.domain.types import Actor, Role
from aftersales.settings import DEV_JWT_SECRET, Settings

ALGORITHMS = ("HS256", "RS256")
TOKEN_ROLES = (Role.BUYER, Role.SELLER, Role.STAFF, Role.JUROR, Role.OPERATOR)
IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}")  # a principal or shop id
LEEWAY_S = 30  # clock skew allowed on exp / nbf / iat


class ConfigError(RuntimeError):
    """The API's settings cannot be used (a production server with the development secret)."""


class AuthError(Exception):
    """The request carries no usable token; `detail` says why (never echoing the token)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a role, the identity service's subject, and for sellers the shop."""

    role: Role
    sub: str
    seller: str | None = None

    @property
    def actor(self) -> Actor:
        """The domain's actor: a seller acts for its shop."""
        if self.role is Role.SELLER:
            return Actor(Role.SELLER, self.seller or self.sub)
        return Actor(self.role, self.sub)

    @property
    def key(self) -> str:
        """Who, for idempotency keys and logs: the role and subject."""
        return f"{self.role.value}:{self.sub}"

    @property
    def platform(self) -> bool:
        return self.role in (Role.STAFF, Role.OPERATOR)


def _public_key(value: str) -> str:
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text
    try:
        return Path(text).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"AFTERSALES_JWT_PUBLIC_KEY: neither a PEM key nor a readable file "
                          f"({exc.strerror})") from None


def check_settings(settings: Settings) -> None:
    """Refuse settings a server must not run with."""
    if settings.jwt_algorithm not in ALGORITHMS:
        raise ConfigError(f"AFTERSALES_JWT_ALGORITHM is one of {', '.join(ALGORITHMS)}, not "
                          f"{settings.jwt_algorithm!r}")
    if settings.jwt_algorithm == "RS256" and not settings.jwt_public_key:
        raise ConfigError("RS256 needs AFTERSALES_JWT_PUBLIC_KEY (a PEM key or its file)")
    if settings.jwt_algorithm == "HS256":
        if settings.environment == "production" and settings.jwt_secret == DEV_JWT_SECRET:
            raise ConfigError("AFTERSALES_ENV=production refuses the development JWT secret: "
                              "set AFTERSALES_JWT_SECRET (32 bytes or more) or use RS256")
        if settings.environment == "production" and len(settings.jwt_secret.encode()) < 32:
            raise ConfigError("AFTERSALES_JWT_SECRET must be at least 32 bytes in production")


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        check_settings(settings)
        self.algorithm = settings.jwt_algorithm
        self.key: Any = settings.jwt_secret
        if self.algorithm == "RS256":
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            pem = _public_key(settings.jwt_public_key or "")
            try:
                self.key = load_pem_public_key(pem.encode())
            except ValueError as exc:
                raise ConfigError(f"AFTERSALES_JWT_PUBLIC_KEY is not a PEM public key: {exc}"
                                  ) from None
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token, self.key, algorithms=[self.algorithm], audience=self.audience,
                issuer=self.issuer, leeway=LEEWAY_S,
                options={"require": ["exp", "sub", "role"],
                         "verify_aud": self.audience is not None})
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.InvalidSignatureError:
            raise AuthError("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise AuthError("the token is not meant for this service (aud)") from None
        except jwt.InvalidIssuerError:
            raise AuthError("the token was not issued by the configured issuer (iss)") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError(f"the token is not signed with {self.algorithm}") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"the token is not valid: {exc}") from None
        return principal_from(claims)


def principal_from(claims: dict[str, Any]) -> Principal:
    role_text, sub, seller = claims.get("role"), claims.get("sub"), claims.get("seller")
    try:
        role = Role(role_text) if isinstance(role_text, str) else None
    except ValueError:
        role = None
    if role not in TOKEN_ROLES:
        raise AuthError(f"the token's role is one of {', '.join(r.value for r in TOKEN_ROLES)}")
    assert role is not None
    if not isinstance(sub, str) or not IDENT.fullmatch(sub):
        raise AuthError("the token's sub is not a valid id (letters, digits, _.@:-, at most 64)")
    if seller is not None and (role is not Role.SELLER or not isinstance(seller, str)
                               or not IDENT.fullmatch(seller)):
        raise AuthError("the token's seller claim is a shop id, on seller tokens only")
    return Principal(role, sub, seller)


def issue_token(settings: Settings, role: Role | str, sub: str, *, seller: str | None = None,
                ttl: timedelta = timedelta(hours=12), private_key: str | None = None,
                now: datetime | None = None) -> str:
    """A signed token for development, tests and the demo. HS256 signs with the settings'
    secret; RS256 needs the private key (PEM text or file)."""
    check_settings(settings)
    principal = principal_from({"role": str(Role(role).value), "sub": sub, "seller": seller})
    at = now or datetime.now(UTC)
    claims: dict[str, Any] = {"sub": principal.sub, "role": principal.role.value,
                              "iat": at, "exp": at + ttl}
    if seller is not None:
        claims["seller"] = seller
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_algorithm == "RS256":
        if not private_key:
            raise ConfigError("RS256 tokens are signed with the identity service's private key: "
                              "pass it (PEM text or file)")
        return jwt.encode(claims, _public_key(private_key), algorithm="RS256")
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
