"""The `pylon` console script. Each command group lives in its own cli/*_cmd.py module."""

from __future__ import annotations

import typer

from cli.common import PylonCommand, PylonGroup, set_verbose
from cli import keys_cmd
from cli import relay_cmd
from cli import config_cmd, doctor_cmd
from cli import trace_cmd
from cli import wallet_cmd, receipts_cmd
from cli import result_cmd
from cli import ask_cmd, serve_cmd, providers_cmd, demo_cmd
from cli import gateway_cmd
from cli import history_cmd, template_cmd
from cli import earnings_cmd
from cli import hub_cmd
from cli import trace_export_cmd
from cli import trace_otel_cmd
from cli import trace_watch_cmd

app = typer.Typer(
    name="pylon",
    help="LLM inference over Nostr, paid with Lightning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=PylonGroup,  # every command's errors end the same way (cli.common.exit_for)
    # plain click help: flags shown as flags (rich panels print `--stream <bool>`), no boxes in pipes
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
)


def _version(value: bool) -> None:
    if value:
        from pylon import __version__

        typer.echo(f"pylon {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the full traceback if Pylon hits a bug."),
) -> None:
    """LLM inference over Nostr, paid with Lightning."""
    set_verbose(verbose)
app.add_typer(keys_cmd.app, name="keys")
app.command("relay")(relay_cmd.relay)
app.add_typer(config_cmd.app, name="config")
app.command("doctor")(doctor_cmd.doctor)
app.add_typer(trace_cmd.app, name="trace")
app.add_typer(wallet_cmd.app, name="wallet")
app.command("receipts")(receipts_cmd.receipts)
app.command("result")(result_cmd.result)
app.command("ask", cls=PylonCommand)(ask_cmd.ask)  # help shows effective defaults
app.command("serve", cls=PylonCommand)(serve_cmd.serve)
app.command("providers")(providers_cmd.providers)
app.command("demo")(demo_cmd.demo)
app.command("gateway")(gateway_cmd.gateway)
app.command("history")(history_cmd.history)
app.command("earnings")(earnings_cmd.earnings)
app.command("jobs")(earnings_cmd.jobs)
app.add_typer(template_cmd.app, name="template")
app.add_typer(hub_cmd.app, name="hub")
trace_cmd.app.command("export")(trace_export_cmd.export)
trace_cmd.app.command("otel")(trace_otel_cmd.otel)
trace_cmd.app.command("watch")(trace_watch_cmd.watch)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
