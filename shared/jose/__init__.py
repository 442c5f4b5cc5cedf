"""JOSE: tokens and keys, with PyJWT and cryptography doing the crypto.

Owns the one JWKS cache for every issuer (``jwks``), the id_token rules shared by Entra ID and EHR
sign-ins (``id_tokens``), and our own signing keys for ``private_key_jwt`` and the published JWKS
(``keys``). Imports only ``kernel``.
"""
