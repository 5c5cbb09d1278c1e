"""OAuth2/OIDC bearer tokens: JWTs checked with PyJWT against the identity provider's JWKS.

Signature (the JWKS' RSA/EC keys, fetched once and cached; an unknown ``kid`` refetches them), issuer, audience,
expiry and not-before (with ``leeway`` seconds of clock skew); the tenant comes from a configurable claim, the
role (``admin``, ``user``, ``viewer``) from another (a string or a list: the most privileged known role in it;
none: ``viewer``).

Example
-------
>>> looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"), looks_like_jwt("an-api-key")
(True, False)
>>> role_of({"role": ["viewer", "user"]}, "role"), role_of({}, "role")
('user', 'viewer')
"""

from __future__ import annotations

from typing import Any

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


def role_of(claims: dict[str, Any], claim: str) -> str:
    """The role a token's ``claim`` names (the most privileged of a list; ``viewer`` when it names none)."""
    from cubepacs.archive.auth.roles import ROLES

    value = claims.get(claim)
    named = {value} if isinstance(value, str) else set(value) if isinstance(value, list) else set()
    return next((r for r in ROLES if r in named), "viewer")


def looks_like_jwt(value: str) -> bool:
    """Three base64url parts, the first a JSON object: a JWT rather than an API key."""
    return value.count(".") == 2 and value.startswith("eyJ")


class OidcVerifier:
    """Checks bearer JWTs; ``tenant(token)`` gives the tenant or raises ValueError with the reason."""

    def __init__(self, jwks_url: str, issuer: str, audience: str, tenant_claim: str = "tenant",
                 leeway: float = 60.0, role_claim: str = "role") -> None:
        from jwt import PyJWKClient

        self.client = PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=10)
        self.issuer, self.audience, self.claim, self.leeway = issuer, audience, tenant_claim, leeway
        self.role_claim = role_claim

    def tenant(self, token: str) -> str:
        """The tenant claim of a valid token."""
        return self.identity(token)[0]

    def identity(self, token: str) -> tuple[str, str, str]:
        """(tenant, role, subject) of a valid token."""
        import jwt

        try:
            key = self.client.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=ALGORITHMS, audience=self.audience or None, issuer=self.issuer or None,
                leeway=self.leeway, options={"require": ["exp"], "verify_aud": bool(self.audience)})
        except jwt.PyJWTError as exc:
            raise ValueError(f"token refused: {exc}") from None
        tenant = claims.get(self.claim)
        if not isinstance(tenant, str) or not tenant:
            raise ValueError(f"token refused: no {self.claim!r} claim")
        return tenant, role_of(claims, self.role_claim), str(claims.get("sub", ""))
