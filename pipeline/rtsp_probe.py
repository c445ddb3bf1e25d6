"""Why an RTSP camera does not open, in the server's own words.

OpenCV's FFmpeg backend says only that a capture did not open, so a wrong path (404), a wrong
password (401) and a camera switched off all read "cannot connect", for days in an unattended
run. One DESCRIBE request, a player's first, asks the server itself.
"""
from __future__ import annotations

import base64
import hashlib
import re
import secrets
import socket
from urllib.parse import SplitResult, unquote, urlsplit

MAX_ANSWER = 16384
"""An answer's headers end well before this; a server that sends more is not read further."""


def why_not_open(url: str, timeout_s: float) -> str:
    """A few words on why ``url`` gave no stream, without the URL's secrets; empty for a URL
    other than ``rtsp://`` (FFmpeg's own protocols are not probed)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "rtsp" or not parts.hostname:
        return ""
    try:
        port = parts.port or 554
    except ValueError:
        return "the port in the URL is not a number from 0 to 65535"
    where = f"{parts.hostname}:{port}"
    address, plain_url = (parts.hostname, port), parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    try:
        status, headers = _describe(address, plain_url, "", timeout_s)
        if status.startswith("401") and parts.username is not None:
            authorization = _authorization(headers.get("www-authenticate", ""), parts, plain_url)
            if authorization:
                status, headers = _describe(address, plain_url, authorization, timeout_s)
    except socket.gaierror:
        return f"no such host {parts.hostname!r}"
    except ConnectionRefusedError:
        return f"nothing listens on {where} (connection refused)"
    except TimeoutError:
        return f"no answer from {where} within {timeout_s:g} s"
    except OSError as exc:
        return f"{where}: {exc.strerror or exc}"
    if not status:
        return f"{where} does not answer as an RTSP server"
    if status.startswith("2"):
        return "the server describes the stream, but it could not be played (another transport?)"
    if status.startswith("401"):
        return (f"the server refuses this user and password ({status})" if parts.username is not None else
                f"the server asks for a user and password ({status})")
    if status.startswith("404"):
        return f"the server has no stream at this path ({status})"
    return f"the server answers {status}"


def _describe(address: tuple[str, int], url: str, authorization: str, timeout_s: float) -> tuple[str, dict[str, str]]:
    """The status (``404 Not Found``; empty if the answer is not RTSP's) and headers of one
    DESCRIBE, on a connection of its own: some cameras close one after a 401."""
    request = (f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n"
               + (f"Authorization: {authorization}\r\n" if authorization else "")
               + "User-Agent: fer-pipe\r\n\r\n")
    answer = b""
    with socket.create_connection(address, timeout_s) as sock:
        sock.sendall(request.encode())
        while b"\r\n\r\n" not in answer and len(answer) < MAX_ANSWER:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    if not answer:
        raise ConnectionError("closed the connection without answering")
    head, *lines = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    match = re.fullmatch(r"RTSP/\d\.\d (\d{3}) ?(.*)", head)
    headers = dict((name.strip().lower(), value.strip()) for name, _, value in (line.partition(":") for line in lines))
    return (f"{match[1]} {match[2]}".strip() if match else ""), headers


def _authorization(challenge: str, parts: SplitResult, uri: str) -> str:
    """The answer to a Basic or Digest challenge (RFC 2617, as RTSP cameras use it); empty for
    a scheme this probe does not speak."""
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    scheme, _, rest = challenge.partition(" ")
    fields = dict(re.findall(r'(\w+)\s*=\s*"?([^",]*)"?', rest))
    if scheme.lower() == "basic":
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    if scheme.lower() != "digest" or "nonce" not in fields:
        return ""

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    realm, nonce = fields.get("realm", ""), fields["nonce"]
    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"DESCRIBE:{uri}")
    said = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
    if "auth" in (qop.strip() for qop in fields.get("qop", "").split(",")):
        cnonce = secrets.token_hex(8)
        return (said + f', response="{md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")}"'
                f', qop=auth, nc=00000001, cnonce="{cnonce}"')
    return said + f', response="{md5(f"{ha1}:{nonce}:{ha2}")}"'
