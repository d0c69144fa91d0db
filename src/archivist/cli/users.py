"""``archivist hash-password``: the hash of a password for the ``http_users`` setting."""

from __future__ import annotations

import getpass
import sys

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
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        typer.secho("error: empty password", fg="red", err=True)
        raise typer.Exit(2)
    typer.echo(make(password))


def register(app: typer.Typer) -> None:
    app.command("hash-password")(hash_password)
