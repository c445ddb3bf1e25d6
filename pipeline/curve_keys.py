"""CURVE key files: written by ``fer-pipe keys``, read the same way by the zmq sink and by
``fer-pipe subscribe``, so a wrong file gets the same one line on both sides."""
from __future__ import annotations

import argparse
import os
import shlex
import stat
import sys
from pathlib import Path

import zmq.auth
from zmq.utils.z85 import Z85CHARS

from .arguments import made_path
from .errors import InputError
from .input_files import file_problem
from .output_files import make_folder


KEY_LENGTH = 40
"""A CURVE key's length in Z85, the text pyzmq's key files hold (32 bytes)."""


def is_key(text: str | bytes) -> bool:
    """Whether ``text`` is a key in Z85: libzmq refused anything else only when the socket was
    set up, with "Invalid argument" and no file named."""
    raw = text.encode("latin-1", "replace") if isinstance(text, str) else text
    return len(raw) == KEY_LENGTH and all(byte in Z85CHARS for byte in raw)


def check_client_folder(path: str) -> None:
    """InputError unless ``path`` is a folder with at least one client public key, each a good
    key. pyzmq's authenticator only logs a folder it cannot read and then refuses every client,
    so a key file given for the folder, or a folder whose only key was cut short, left the
    publisher sending to nobody, in silence."""
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{path}: {'no such folder' if not folder.exists() else 'is a file'}; curve_clients "
                         "names a folder of client public keys (copies of client.key)")
    files = sorted(folder.glob("*.key"))  # what pyzmq's load_certificates reads
    if not files:
        raise InputError(f"{path}: holds no client public key (*.key); no subscriber could connect")
    for file in files:
        try:
            public, _ = zmq.auth.load_certificate(file)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read its client keys: {exc}") from None
        _check_key(public, "public", f"curve_clients {file}")


class ClientFolder:
    """Admits a subscriber whose public key is in the folder as it is now, read again at each
    handshake, and says each key it refuses once. pyzmq's own folder is read once at the start,
    so a key removed from it was still admitted, for as long as the run lasted, and a refused
    subscriber left no trace beside "0 of 1 subscriptions"; ZeroMQ authenticates at the
    handshake alone, so a subscriber connected already stays."""

    SAID_AT_MOST = 100
    """Refused keys said; more means something tries keys, which a line each would not help."""

    def __init__(self, folder: str, who: str) -> None:
        self.folder, self.who = folder, who
        self.said: set[bytes] = set()
        self.unreadable = False

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq's credentials provider: ``key`` is the client's public key in Z85."""
        try:
            allowed = zmq.auth.load_certificates(self.folder)
        except (OSError, ValueError) as exc:
            if not self.unreadable:
                self.unreadable = True
                print(f"fer-pipe: {self.who}: cannot read curve_clients {self.folder} ({exc}); refusing every "
                      "subscriber until it can", file=sys.stderr, flush=True)
            return False
        self.unreadable = False
        if key in allowed:
            return True
        if key not in self.said and len(self.said) < self.SAID_AT_MOST:
            self.said.add(key)
            print(f"fer-pipe: {self.who}: refused a subscriber whose client key {key.decode('ascii')} is not in "
                  f"curve_clients {self.folder}", file=sys.stderr, flush=True)
        return False


def load_keys(path: str, secret: bool, what: str, warn: bool = True) -> tuple[bytes, bytes | None]:
    """The public and secret key in ``path``; with ``secret``, a file without the secret half
    (the ``.key`` where the ``.key_secret`` is meant) is refused. ``what`` (the option or param
    that named the file) begins each line: a subscriber gives two key files. A name that may be
    a key itself, given for its file, is not echoed: the line goes to a log (journald). ``warn``: say where the
    secret is not kept secret (once a run: its stage reads the file again after the check)."""
    problem = file_problem(path)
    if problem:
        if not os.path.lexists(path) and is_key(path):
            raise InputError(f"{what}: no such file, and the name given is 40 characters of Z85, as a key is: not "
                             "shown, should it be one; give the path of the key file fer-pipe keys wrote")
        raise InputError(f"{what} {path}: {problem}" + (", not a key file" if problem == "is a folder" else ""))
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except PermissionError:
        raise InputError(f"{what} {path}: cannot read it: permission denied (the run's user needs read access)"
                         ) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{what} {path}: not a CURVE key file: {exc}") from None
    if secret and secret_key is None:
        raise InputError(f"{what} {path}: holds no secret key " + (
            "(its secret-key line is missing: make a new pair with fer-pipe keys)" if path.endswith(".key_secret")
            else "(give the .key_secret file, not the .key)"))
    _check_key(public, "public", f"{what} {path}")
    if secret:
        _check_key(secret_key, "secret", f"{what} {path}")
        if warn:
            _warn_if_shared(path, what)
    elif secret_key is not None and warn:
        print(f"fer-pipe: WARNING: {what} {path} holds a secret key, which only its owner should have; give "
              "the public key file (server.key) instead", file=sys.stderr)
    return public, secret_key


def _check_key(key: bytes, half: str, where: str) -> None:
    if not is_key(key):
        raise InputError(f"{where}: its {half}-key is not a {KEY_LENGTH}-character Z85 key (cut short or "
                         "changed? make a new pair with fer-pipe keys)")


def _warn_if_shared(path: str, what: str) -> None:
    """Say so where others may read a secret key, as ssh does of a private key: pyzmq writes
    "do not change its permissions" into the file, and fer-pipe keys makes it 0600."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        print(f"fer-pipe: WARNING: {what} {path} can be read by others (mode {stat.S_IMODE(mode):04o}); a secret "
              f"key should be its owner's alone: chmod 600 {shlex.quote(path)}", file=sys.stderr)


def add_keys_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=made_path, help="folder for the keys (created; existing keys are never overwritten)")


def make_keys(args: argparse.Namespace) -> int:
    """A server and a client CURVE keypair: ``server.key``/``server.key_secret``, ``client.*``."""
    folder = Path(args.dir)
    existing = [folder / f"{name}{end}" for name in ("server", "client") for end in (".key", ".key_secret")
                if os.path.lexists(folder / f"{name}{end}")]  # a link too: pyzmq writes through it
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
