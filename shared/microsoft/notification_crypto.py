"""Decrypting Graph rich notifications, as Microsoft Graph documents it.

RSA-OAEP (SHA-1) unwraps a symmetric key; HMAC-SHA256 of the ciphertext under that key must equal
``dataSignature``; AES-CBC with IV = the key's first 16 bytes and PKCS7 padding yields the JSON resource.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asymmetric_padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from shared.kernel.errors import BadRequest
from shared.kernel.json_input import parse_json

# --- Graph rich notifications --------------------------------------------------------------


@dataclass(frozen=True)
class EncryptedContent:
    data: bytes
    data_signature: bytes
    data_key: bytes
    certificate_id: str

    @classmethod
    def from_notification(cls, item: Mapping[str, Any]) -> EncryptedContent:
        try:
            content = item["encryptedContent"]
            return cls(
                data=base64.b64decode(content["data"], validate=True),
                data_signature=base64.b64decode(content["dataSignature"], validate=True),
                data_key=base64.b64decode(content["dataKey"], validate=True),
                certificate_id=str(content["encryptionCertificateId"]),
            )
        except (KeyError, TypeError, ValueError):
            raise BadRequest("notification has no valid encryptedContent") from None


def decrypt_resource(content: EncryptedContent, keys_by_certificate_id: Mapping[str, RSAPrivateKey]) -> Any:
    """Decrypt and authenticate a rich notification's resource data (Graph's documented scheme)."""
    private_key = keys_by_certificate_id.get(content.certificate_id)
    if private_key is None:
        raise BadRequest("notification was encrypted for an unknown certificate")
    try:
        symmetric_key = private_key.decrypt(
            content.data_key,
            asymmetric_padding.OAEP(
                mgf=asymmetric_padding.MGF1(algorithm=hashes.SHA1()),  # noqa: S303 - Graph's documented scheme
                algorithm=hashes.SHA1(),  # noqa: S303
                label=None,
            ),
        )
    except ValueError:
        raise BadRequest("notification key could not be decrypted") from None
    expected = hmac.new(symmetric_key, content.data, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, content.data_signature):
        raise BadRequest("notification signature does not match")
    try:
        decryptor = Cipher(algorithms.AES(symmetric_key), modes.CBC(symmetric_key[:16])).decryptor()
        padded = decryptor.update(content.data) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        plaintext = unpadder.update(padded) + unpadder.finalize()
        return parse_json(plaintext)
    except ValueError:
        raise BadRequest("notification content could not be decrypted") from None
