"""``archivist hash-password``: the hash of a password for the ``http_users`` setting."""

from __future__ import annotations

import getpass
import sys
import unicodedata

import typer


def hash_password() -> None:
    """Print a salted scrypt hash of a password, for the http_users setting.

    The password is asked twice on a terminal, or read from the first line of standard input
    (`printf '%s\\n' "$PW" | archivist hash-password`). Put the hash in the settings file
    ([http_users] table: alice = "scrypt$...") or in ARCHIVIST_HTTP_USERS="alice=scrypt$...";
    HTTP then asks for a user name and password (Basic) on every route but /healthz.
    """
    from archivist.core.passwords import hash_password as make

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            typer.secho("error: the two passwords differ", fg="red", err=True)
            raise typer.Exit(2)
    else:
        password = _first_line(sys.stdin.buffer.readline())
    if not password:
        typer.secho("error: empty password", fg="red", err=True)
        raise typer.Exit(2)
    if any(unicodedata.category(c) == "Cc" for c in password):
        # RFC 7617 2: no control characters in Basic credentials; a browser cannot send them.
        typer.secho("error: the password holds a control character (a tab, an escape...)",
                    fg="red", err=True)
        raise typer.Exit(2)
    typer.echo(make(password))


def _first_line(raw: bytes) -> str:
    """The password on a line of standard input: UTF-8, else Latin-1 (a file saved by an
    older editor; invalid UTF-8 made a traceback), as the server decodes what clients send;
    a UTF-8 byte order mark before it is not part of it."""
    raw = raw.rstrip(b"\r\n").removeprefix(b"\xef\xbb\xbf")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def register(app: typer.Typer) -> None:
    app.command("hash-password")(hash_password)
