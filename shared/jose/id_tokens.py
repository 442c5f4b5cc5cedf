"""Validating OpenID Connect id_tokens from Entra ID and from EHRs: one set of rules, PyJWT doing the crypto.

Rules: an asymmetric algorithm from an allow-list (never ``none`` or HMAC), a key found by
``kid`` in the issuer's JWKS (refetched once when a ``kid`` is unknown, for key rotation) or, for a
token without ``kid``, one of the few published keys of its algorithm that verifies it, signature,
``iss``, ``aud``, ``exp``/``iat`` with a small leeway, and ``nonce`` when one was sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jwt

from shared.kernel.errors import InvalidIdToken

ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
LEEWAY_SECONDS = 120


def unverified_claims(token: str) -> dict[str, Any]:
    """Claims read without checking the signature: only to choose the issuer to check against."""
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise InvalidIdToken("it is not a well-formed JWT") from None
    return claims


def validate_id_token(
    token: str,
    *,
    keys_for: Callable[[str | None, str], Sequence[jwt.PyJWK]],
    issuer: str,
    audience: str,
    nonce: str | None,
    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS,
) -> dict[str, Any]:
    """Return the claims of a valid id_token, or raise ``InvalidIdToken`` saying which rule failed.

    ``keys_for(kid, alg)`` names the keys to try (``JwksCache.keys_for``): the one named by ``kid``, or for a
    token without ``kid`` each published key of its algorithm; the first whose signature matches decides.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidIdToken("it is not a well-formed JWT") from None
    algorithm = header.get("alg")
    if algorithm not in algorithms:
        raise InvalidIdToken(f"its signing algorithm {algorithm!r} is not accepted")
    kid = header.get("kid")
    keys = keys_for(kid if isinstance(kid, str) else None, str(algorithm))
    for key in keys:
        # One decode per candidate key checks the signature first, then the claims: a key whose signature does
        # not match raises before any claim is read, so the next key is tried (the token is parsed and its
        # signature verified once for the key that decides, not once for the signature and again for the claims).
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[str(algorithm)],
                audience=audience,
                issuer=issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]},
            )
        except jwt.InvalidSignatureError:
            continue  # not this key: try the next one
        except jwt.ExpiredSignatureError:
            raise InvalidIdToken("it has expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidIdToken("it was issued for another application") from None
        except jwt.InvalidIssuerError:
            raise InvalidIdToken("it was issued by an unexpected issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidIdToken(f"it lacks the {exc.claim!r} claim") from None
        except jwt.DecodeError:
            raise InvalidIdToken("it is not a well-formed JWT") from None
        except jwt.PyJWTError:
            raise InvalidIdToken("it is not valid") from None
        return _checked_nonce(claims, nonce)
    raise InvalidIdToken("its signature is not valid")


def _checked_nonce(claims: dict[str, Any], nonce: str | None) -> dict[str, Any]:
    if nonce is not None and claims.get("nonce") != nonce:
        raise InvalidIdToken("its nonce does not match this sign-in")
    return claims
