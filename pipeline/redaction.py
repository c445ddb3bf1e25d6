"""Credentials kept out of log and error lines, which end up in a journal: a URL's password,
and ``name=value`` credentials in its path or query, as many IP cameras take them."""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

SECRET_NAME = (r"(?<![a-z0-9_.-])([a-z0-9_.-]*(?:pw|pwd|psw|pas|pass|passwd|password|passwort|passphrase|token|"
               r"key|auth|secret|sig|signature|credentials?)(?:[_.-]?\d+)?)=")
"""A ``name=`` whose name ends like a credential's, as many IP cameras take them, in the query
(``videostream.cgi?user=admin&pwd=...``, ``loginpas=``, ``authtoken=``, ``password1=``) or in the path
(``/user=admin&password=..._channel=1``). ``keyframes=`` and ``author=`` are left alone;
``bypass=`` is masked too, which costs a log line a value rather than leak one."""
IN_QUERY = re.compile(SECRET_NAME + r"[^&#]*", re.IGNORECASE)
IN_PATH = re.compile(SECRET_NAME + r"[^&/?#]*", re.IGNORECASE)
"""A query value runs to the next ``&``; a path value also ends at ``/``, which masks more than
the secret where ``_`` separates the fields, rather than less."""


def redact(url: str) -> str:
    """The URL without a password, for log lines: they go to the journal. The user part ends at
    the last ``@`` before the path, as FFmpeg reads it (a password may hold an ``@``), or, where
    urlsplit finds no password, or an ``@`` after the host it read (``admin:Pa@ss/w0rd@cam``,
    where it read password ``Pa`` and host ``ss``), at the URL's last ``@`` (``HIDDEN_USERINFO``). Credentials given
    as ``name=value`` in the path or the query are masked too, and after a mask to the last ``@``
    anywhere in what follows it. A URL urlsplit cannot read at all (an IPv6 host without its ``]``)
    is masked to its last ``@`` as well: the error it raised came out of the sources and batch as a
    traceback, the password in it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _to_last_at(url)
    if (parts.password is None or "@" in parts.path + parts.query + parts.fragment) \
            and HIDDEN_USERINFO.match(url):  # urlsplit cut it at a '/', '?' or '#' of its password?
        return _to_last_at(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.split(':')[0]}:***@{host}"
    path, query, fragment = (pattern.sub(_masked, text) for pattern, text in (
        (IN_PATH, parts.path), (IN_QUERY, parts.query), (IN_QUERY, parts.fragment)))
    if (netloc, path, query, fragment) == (parts.netloc, parts.path, parts.query, parts.fragment):
        return url
    return urlunsplit(parts._replace(netloc=netloc, path=path, query=query, fragment=fragment))


def _masked(match: re.Match[str]) -> str:
    return f"{match.group(1)}=***"


def _to_last_at(url: str) -> str:
    """``url`` masked to its last ``@``, and each ``name=value`` credential in what follows it,
    whose host, path and query are not known apart: that rest read again as a URL made a query's
    ``user=me@corp.com&password=...`` its host, and the password went out in clear."""
    return IN_QUERY.sub(_masked, HIDDEN_USERINFO.sub(r"\1:***@", url, count=1))


URL = re.compile(r"[a-z][a-z0-9+.-]*:/{1,2}(?:[^\s@]{0,256}@)?[^\s'\"]*[^\s'\":]", re.IGNORECASE)
"""A URL, also with one slash after its scheme: a URL given where a path belongs comes back
through ``pathlib`` as ``rtsp:/admin:pw@host``. A colon at its end is the line's (``URL: why``).
A quote ends it, as a line quotes one, but not inside its user part, where a password may hold
one (``'`` is a URL's own character), after a ``/`` too (``admin:/Pa'ss@cam`` was said whole,
s67a 3): what a quote after an ``@`` there cuts off is masked with the rest of the word
(``BARE_USERINFO``). A user part is taken to 256 characters, so that a long word that is no URL
costs a scan of that much at each place a scheme could start, not of the whole word."""


HIDDEN_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*:/+[^:/?#\s]*):.*@", re.IGNORECASE)
"""A password holding ``/``, ``?`` or ``#`` (``rtsp://admin:se#cret@cam/live``, a base64 one's
``/`` and ``==``, or a space: ``admin:a/b c@cam``, s66d 1), where urlsplit ends the host and
finds no password: up to the last ``@``. The
user may hold an ``@`` (an e-mail login, ``me@mail.com:pw@cam``), which FFmpeg reads so too.
Which a URL means is not in the text (``rtsp://admin:8554/x@cam`` is also host ``admin``, port
8554), so an ``@`` later in a URL without a password masks what stands before it, host and port
with it (``rtsp://cam:554/live@main`` is said as ``rtsp://cam:***@main``): a log line loses a
readable host rather than show a password. A URL urlsplit cannot read at all is masked the same way."""


BARE_USERINFO = re.compile(r"(?:(?<![\w/:.@%~-])|(?<=//))([\w.~%@-]+):(?!/)\S{0,256}@([\w\[](?:[^\s'\"]*[^\s'\":])?)")
"""``user:password@host`` where no ``scheme:`` comes before it (a camera's URL with its scheme
left out, or all but ``//`` of it, echoed in the line refusing it; the user may be an e-mail
login): up to the word's last ``@``, as
FFmpeg reads a password holding ``/``, ``@`` or a quote, and the ``name=value`` credentials after it; a
word shaped so (``10:30@noon``) is masked too. The password is taken to 256 characters, as
``URL``'s user part is: ``//b:`` again and again over 200 KB took 7 s (s67f 5)."""


SPACED_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*:/{1,2}(?:\[[^\]\s]*\]|[^:/?#\s]*)):"
                             r"(?!\d+(?:\s(?!\S*@)|/(?!\S*\s\S*@)|[,;)'\"]|$))[^\s@]{0,256}(?:@[^\s@/]{0,256}){0,8}\s.*@",
                             re.IGNORECASE)
"""``scheme://user:pass word@``: a password holding a space (or a tab, or another Unicode
space), where the line's URL pattern ends at it, and neither it nor ``BARE_USERINFO`` saw an
``@`` in what it had: the line said ``rtsp://admin:TOP SECRET@cam/x`` whole (s66b 5), and
``rtsp://admin:a/b c@cam/x`` and an e-mail login's too (s66d 1, s66e 3), and an ``@`` before
the space, up to a ``/`` (``P@ss Word1@cam``, s67a 2). Masked to the line's last ``@``. The
password before its space is taken to 256 characters: unbounded, a line of 90 KB that was no
URL took 16 s to scan. What follows a host's port is no password where the word after it holds no ``@``
(``tcp://10.0.0.2:5560 takes events; run 1@2``, s66d 6); where it does (``tcp://[::1]:5556
me@host``), which the text cannot tell from ``admin:5556 me@host``, it is masked, as a log line
loses a readable host rather than show a password (``2024 summer``, s66e 1)."""


def redact_urls(text: str) -> str:
    """``text`` (an error line that quotes what the user gave) with each URL in it redacted, and
    any ``user:password@`` outside a URL."""
    text = SPACED_PASSWORD.sub(r"\1:***@", text)

    def one(match: re.Match[str]) -> str:
        url = match.group(0)
        collapsed = "://" not in url
        said = redact(url.replace(":/", "://", 1) if collapsed else url)
        return said.replace("://", ":/", 1) if collapsed else said

    return BARE_USERINFO.sub(lambda m: f"{m.group(1)}:***@{IN_QUERY.sub(_masked, m.group(2))}", URL.sub(one, text))
