"""CURVE key files written by ``fer-pipe keys``, read the same way by the zmq sink and by
``fer-pipe subscribe``, so a wrong file gets the same one line on both sides."""
from __future__ import annotations

from pathlib import Path

import zmq.auth

from .errors import InputError


def load_keys(path: str, secret: bool) -> tuple[bytes, bytes | None]:
    """The public and secret key in ``path``; with ``secret``, a file without the secret half
    (the ``.key`` where the ``.key_secret`` is meant) is refused."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file" if not Path(path).exists() else f"{path}: is a folder, not a key file")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a CURVE key file: {exc}") from None
    if secret and secret_key is None:
        raise InputError(f"{path}: holds no secret key (give the .key_secret file, not the .key)")
    return public, secret_key
