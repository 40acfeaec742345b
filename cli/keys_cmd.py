"""`pylon keys new|show|import`: the identity under PYLON_HOME."""

from __future__ import annotations

import typer

from cli.common import console, fail, print_json
from pylon.home import identity_path
from pylon.nostr import Keys

app = typer.Typer(help="Manage the Nostr identity in PYLON_HOME.", no_args_is_help=True)


@app.command("new")
def new(force: bool = typer.Option(False, "--force", help="Replace an existing identity."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON object.")) -> None:
    """Generate a new identity (file mode 0600) and print its npub."""
    path = identity_path()
    if path.exists() and not force:
        fail(f"an identity already exists at {path}", 2, "use --force to replace it (back it up first)")
    keys = Keys.generate()
    keys.save(path)
    if json_out:
        print_json({"npub": keys.npub, "pubkey": keys.public_key, "path": str(path)})
    else:
        console.print(keys.npub, highlight=False)


@app.command("show")
def show(
    secret: bool = typer.Option(False, "--secret", help="Also print the nsec (keep it private)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Print the identity's npub (and hex public key); never the secret unless asked."""
    path = identity_path()
    if not path.exists():
        fail(f"no identity at {path}", hint="run `pylon keys new` to create one, or `pylon keys import` to use an nsec")
    keys = Keys.load(path)
    data = {"npub": keys.npub, "pubkey": keys.public_key}
    if secret:
        data["nsec"] = keys.nsec
    if json_out:
        print_json(data)
    else:
        for key, value in data.items():
            console.print(f"{key}: {value}", highlight=False)


@app.command("import")
def import_(
    file: str = typer.Option("-", "--from", metavar="PATH", help="Read the nsec (or 64-hex secret) from this file; "
                             "'-' (the default) reads stdin, so it never appears in ps or shell history."),
    force: bool = typer.Option(False, "--force", help="Replace an existing identity."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Use an existing Nostr secret key as this identity (file mode 0600) and print its npub."""
    import sys
    from pathlib import Path

    from pylon.nostr.errors import InvalidKey

    path = identity_path()
    if path.exists() and not force:
        fail(f"an identity already exists at {path}", 2, "use --force to replace it (back it up first)")
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}", 7)
    value = text.strip()
    if not value:
        fail("no secret key given: pipe an nsec into `pylon keys import` (or --from FILE)")
    if value.startswith("npub"):
        fail("that is a public key (npub); importing needs the secret key (nsec1…)")
    try:
        keys = Keys.parse(value)
    except InvalidKey as exc:
        fail(f"not a Nostr secret key: {exc.parts()[0]}", 8)
    keys.save(path)
    if json_out:
        print_json({"npub": keys.npub, "pubkey": keys.public_key, "path": str(path)})
    else:
        console.print(keys.npub, highlight=False)
