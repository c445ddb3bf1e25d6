"""CURVE key files: written by ``fer-pipe keys``, read the same way by the zmq sink and by
``fer-pipe subscribe``, so a wrong file gets the same one line on both sides."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import zmq.auth

from .arguments import made_path
from .errors import InputError
from .output_files import make_folder


def check_client_folder(path: str) -> None:
    """InputError unless ``path`` is a folder with at least one client public key. pyzmq's
    authenticator only logs a folder it cannot read and then refuses every client, so a key
    file given for the folder would leave the publisher sending to nobody, in silence."""
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{path}: {'no such folder' if not folder.exists() else 'is a file'}; curve_clients "
                         "names a folder of client public keys (copies of client.key)")
    try:
        keys = zmq.auth.load_certificates(folder)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read its client keys: {exc}") from None
    if not keys:
        raise InputError(f"{path}: holds no client public key (*.key); no subscriber could connect")


def load_keys(path: str, secret: bool, what: str) -> tuple[bytes, bytes | None]:
    """The public and secret key in ``path``; with ``secret``, a file without the secret half
    (the ``.key`` where the ``.key_secret`` is meant) is refused. ``what`` (the option or param
    that named the file) begins each line: a subscriber gives two key files."""
    if not Path(path).is_file():
        problem = ("no such file" if not Path(path).exists() else "is a folder, not a key file" if Path(path).is_dir()
                   else "not a regular file")
        raise InputError(f"{what} {path}: {problem}")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{what} {path}: not a CURVE key file: {exc}") from None
    if secret and secret_key is None:
        raise InputError(f"{what} {path}: holds no secret key (give the .key_secret file, not the .key)")
    return public, secret_key


def add_keys_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=made_path, help="folder for the keys (created; existing keys are never overwritten)")


def make_keys(args: argparse.Namespace) -> int:
    """A server and a client CURVE keypair: ``server.key``/``server.key_secret``, ``client.*``."""
    folder = Path(args.dir)
    existing = [p for p in (folder / "server.key_secret", folder / "client.key_secret") if p.exists()]
    if existing:
        raise InputError(f"keys {existing[0]}: already exists; choose another folder")
    make_folder(folder, "keys")
    # Made readable by this user alone from the start: made with the usual umask and narrowed
    # after, a secret key was there for the reading of anyone who opened it in between.
    kept = os.umask(0o077)
    try:
        for name in ("server", "client"):
            public, _ = zmq.auth.create_certificates(folder, name)
            Path(public).chmod(0o644)  # public keys are for handing out
    finally:
        os.umask(kept)
    print(f"{folder}/server.key_secret  the zmq sink's curve_secret_key (keep it on the publisher)\n"
          f"{folder}/server.key         the publisher's public key: subscribers pass it as --server-key\n"
          f"{folder}/client.key_secret  a subscriber's key: --client-keys (keep it on the subscriber)\n"
          f"{folder}/client.key         put a copy in a folder named by the sink's curve_clients "
          "to admit only known subscribers")
    return 0
