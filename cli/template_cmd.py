"""`pylon template save|list|show|path`: saved prompts for `pylon ask --template NAME`.

Templates live in PYLON_HOME/templates/NAME.toml (see cli.prompts for the format).
"""

from __future__ import annotations

from typing import Optional

import typer

from cli.common import console, handle_errors, print_json
from cli.prompts import PromptTemplate, list_templates, load_template, save_template, template_path
from pylon.errors import ConfigError
from pylon.jobs.params import check_params

app = typer.Typer(help="Saved prompt templates for `pylon ask --template NAME`.", no_args_is_help=True)


@app.command("save")
@handle_errors
def save(
    name: str = typer.Argument(..., help="Template name (letters, digits, '.', '_', '-')."),
    system: Optional[str] = typer.Option(None, "--system", "-s", help="System prompt."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Prompt; $input stands for what `ask` is given."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Default model."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Default max_tokens."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Default temperature."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing template."),
) -> None:
    """Save a prompt template."""
    if not (system or prompt):
        raise ConfigError("a template needs --system and/or --prompt")
    check_params({"max_tokens": max_tokens, "temperature": temperature})
    path = template_path(name)
    if path.exists() and not force:
        raise ConfigError(f"template {name!r} exists ({path})", hint="pass --force to replace it")
    save_template(PromptTemplate(name=name, system=system, prompt=prompt, model=model, max_tokens=max_tokens,
                                 temperature=temperature))
    console.print(f"saved template {name} ({path})", highlight=False, markup=False)


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print a JSON array.")) -> None:
    """List saved templates."""
    names = list_templates()
    if as_json:
        print_json(names)
    else:
        for name in names:
            typer.echo(name)


@app.command("show")
@handle_errors
def show(name: str = typer.Argument(..., help="Template name."),
         as_json: bool = typer.Option(False, "--json", help="Print a JSON object.")) -> None:
    """Print a template."""
    template = load_template(name)
    if as_json:
        print_json({k: v for k, v in vars(template).items()})
    else:
        typer.echo(template.to_toml(), nl=False)


@app.command("path")
@handle_errors
def path_cmd(name: str = typer.Argument(..., help="Template name.")) -> None:
    """Print where a template is (or would be) saved."""
    typer.echo(str(template_path(name)))
