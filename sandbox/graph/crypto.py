"""Encryption of rich notification content, exactly as Graph documents it.

A fresh 32-byte key per notification; AES-256-CBC with IV = the key's first 16 bytes and PKCS7
padding; HMAC-SHA256 of the ciphertext with the same key (``dataSignature``); the key wrapped with
RSA-OAEP (SHA-1, MGF1-SHA-1) under the subscriber's certificate (``dataKey``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class CertificateError(ValueError):
    """The subscription's ``encryptionCertificate`` is unusable."""


class EncryptionCertificate:
    """A subscriber's certificate: base64 DER with an RSA public key of 2048 to 4096 bits."""

    def __init__(self, base64_der: str) -> None:
        try:
            der = base64.b64decode(base64_der, validate=True)
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            raise CertificateError("The encryption certificate is not a base64-encoded DER certificate.") from None
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey) or not 2048 <= key.key_size <= 4096:
            raise CertificateError("The encryption certificate must hold an RSA key of 2048 to 4096 bits.")
        self.public_key = key
        self.thumbprint = hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


def encrypt_content(payload: dict[str, Any], certificate: EncryptionCertificate, certificate_id: str) -> dict[str, str]:
    """The ``encryptedContent`` object for ``payload``."""
    key = os.urandom(32)
    padder = padding.PKCS7(128).padder()
    plaintext = padder.update(json.dumps(payload).encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    data = encryptor.update(plaintext) + encryptor.finalize()
    signature = hmac.new(key, data, hashlib.sha256).digest()
    wrapped = certificate.public_key.encrypt(
        key,
        OAEP(mgf=MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None),  # noqa: S303 - Graph's scheme
    )
    return {
        "data": base64.b64encode(data).decode(),
        "dataSignature": base64.b64encode(signature).decode(),
        "dataKey": base64.b64encode(wrapped).decode(),
        "encryptionCertificateId": certificate_id,
        "encryptionCertificateThumbprint": certificate.thumbprint,
    }
