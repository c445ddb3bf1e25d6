"""Why an RTSP camera does not open, in the server's own words.

OpenCV's FFmpeg backend says only that a capture did not open, so a wrong path (404), a wrong
password (401) and a camera switched off all read "cannot connect", for days in an unattended
run. One DESCRIBE request, a player's first, asks the server itself.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit
from urllib.request import parse_http_list

MAX_ANSWER = 16384
"""An answer's headers end well before this; a server that sends more is not read further."""


NO_ANSWER = "no answer from"
"""How the probe's reason begins where the server said nothing within the time given."""
OTHER_TRANSPORT = "(another transport?)"
"""How the probe's reason ends where the server is up but did not play over the transport tried."""
UNENCODED_PASSWORD = ("not probed: an '@' after the host may end a password holding '/', '?' or '#', where "
                      "FFmpeg ends the host; percent-encode them in the password (%2F, %3F, %23)")
"""The reason where the host is a guess: FFmpeg, like urlsplit, ends a URL's host at the first ``/``,
``?`` or ``#``, so ``rtsp://admin:pa/ss@cam/live`` names host ``pa``, a piece of the password, which
the probe would look up and then quote in the journal."""


def why_not_open(url: str, timeout_s: float) -> str:
    """A few words on why ``url`` gave no stream, without the URL's secrets; empty for a URL
    other than ``rtsp://`` (FFmpeg's own protocols are not probed)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "rtsp" or not parts.hostname:
        return ""
    if "@" in parts.path + parts.query + parts.fragment:
        return UNENCODED_PASSWORD
    try:
        port = parts.port or 554
    except ValueError:
        return "the port in the URL is not a number from 0 to 65535"
    where = f"[{parts.hostname}]:{port}" if ":" in parts.hostname else f"{parts.hostname}:{port}"
    address, plain_url = (parts.hostname, port), parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    answered = ""
    try:
        status, challenges, media = _describe(address, plain_url, "", timeout_s)
        if status.startswith("401") and parts.username is not None:
            answered, authorization = _authorization(challenges, parts, plain_url)
            if authorization:
                status, challenges, media = _describe(address, plain_url, authorization, timeout_s)
    except (socket.gaierror, UnicodeError):  # UnicodeError: a name IDNA refuses (cam..lan)
        return f"no such host {parts.hostname!r}"
    except ConnectionRefusedError:
        return f"nothing listens on {where} (connection refused)"
    except TimeoutError:
        return f"{NO_ANSWER} {where} within {timeout_s:g} s"
    except OSError as exc:
        return f"{where}: {exc.strerror or exc}"
    if not status:
        return f"{where} does not answer as an RTSP server"
    if status.startswith("2") and media and "video" not in media:  # no transport plays what is not there
        return f"the stream at this path has no video (its description lists: {', '.join(media)})"
    if status.startswith("2"):
        return f"the server describes the stream, but it could not be played {OTHER_TRANSPORT}"
    if status.startswith("401"):
        if parts.username is None:
            return f"the server asks for a user and password ({status})"
        if not answered:
            return f"the server asks for a user and password ({status}) by a login this check does not speak"
        return f"the server refuses this user and password ({status}, {answered})"
    if status.startswith("404"):
        return f"the server has no stream at this path ({status})"
    return f"the server answers {status}"


def _describe(address: tuple[str, int], url: str, authorization: str,
              timeout_s: float) -> tuple[str, list[str], list[str]]:
    """The status (``404 Not Found``; empty if the answer is not RTSP's), the login challenges
    (``WWW-Authenticate``, one per header: a camera may offer several) and the kinds of media
    its description lists (``m=audio ...``: an audio-only path was said as a transport problem)
    of one DESCRIBE, on a connection of its own: some cameras close one after a 401."""
    request = (f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n"
               + (f"Authorization: {authorization}\r\n" if authorization else "")
               + "User-Agent: fer-pipe\r\n\r\n")
    answer, deadline = b"", time.monotonic() + timeout_s
    with socket.create_connection(address, timeout_s) as sock:
        sock.sendall(request.encode())

        def more() -> bytes:
            left = deadline - time.monotonic()  # the whole answer within timeout_s, not each piece
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            return sock.recv(4096)

        while b"\r\n\r\n" not in answer and len(answer) < MAX_ANSWER and (chunk := more()):
            answer += chunk
        header, _, body = answer.partition(b"\r\n\r\n")
        head, *lines = header.decode("latin-1").split("\r\n")
        fields = [(name.strip().lower(), value.strip()) for name, _, value in (line.partition(":") for line in lines)]
        length = next((int(value) for name, value in fields  # "²" is a digit to isdigit, and int() takes 4,300 at most
                       if name == "content-length" and value.isascii() and value.isdigit() and len(value) < 10), 0)
        with contextlib.suppress(OSError):  # a timeout or a reset in the description: the status stands
            while len(body) < min(length, MAX_ANSWER) and (chunk := more()):
                body += chunk
    if not answer:
        raise ConnectionError("closed the connection without answering")
    match = re.fullmatch(r"RTSP/\d\.\d (\d{3}) ?(.*)", head)
    challenges = [value for name, value in fields if name == "www-authenticate"]
    media = [line[2:].split(" ")[0] for line in body.decode("latin-1").splitlines() if line.startswith("m=")]
    return (f"{match[1]} {match[2]}".strip() if match else ""), challenges, media


DIGESTS = {"md5": hashlib.md5, "sha-256": hashlib.sha256}
"""Digest's hash algorithms (RFC 7616; RTSP cameras use MD5), each also in its ``-sess`` form."""


def _authorization(challenges: list[str], parts: SplitResult, uri: str) -> tuple[str, str]:
    """The login answered (``Digest``, ``Basic``) and the ``Authorization`` header answering it;
    Digest is preferred where a camera offers both. Empty strings where no challenge is one
    this probe can answer."""
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    offered = {}
    for challenge in challenges:
        scheme, _, rest = challenge.partition(" ")
        fields = {}
        for item in parse_http_list(rest):  # quoted values may hold commas
            name, equals, value = item.partition("=")
            if equals:  # a bare flag or a Negotiate token is no field of Digest's or Basic's
                fields[name.strip().lower()] = value.strip().removeprefix('"').removesuffix('"')
        offered.setdefault(scheme.lower(), fields)
    digest = offered.get("digest", {})
    algorithm = digest.get("algorithm", "MD5")
    hash_name = algorithm.lower().removesuffix("-sess")
    if "nonce" in digest and hash_name in DIGESTS:
        return "Digest", _digest(digest, algorithm, DIGESTS[hash_name], user, password, uri)
    if "basic" in offered:
        return "Basic", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return "", ""


def _digest(fields: dict[str, str], algorithm: str, hash_function: Callable[[bytes], Any], user: str,
            password: str, uri: str) -> str:
    def h(text: str) -> str:
        return hash_function(text.encode()).hexdigest()

    realm, nonce, cnonce = fields.get("realm", ""), fields["nonce"], secrets.token_hex(8)
    ha1 = h(f"{user}:{realm}:{password}")
    if algorithm.lower().endswith("-sess"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(f"DESCRIBE:{uri}")
    said = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
    if "algorithm" in fields:
        said += f", algorithm={algorithm}"
    if "opaque" in fields:
        said += f', opaque="{fields["opaque"]}"'
    if "auth" in (qop.strip() for qop in fields.get("qop", "").split(",")):
        response = h(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
        return said + f', response="{response}", qop=auth, nc=00000001, cnonce="{cnonce}"'
    return said + f', response="{h(f"{ha1}:{nonce}:{ha2}")}"'
