"""`pylon ask` prompts as real processes: argument, piped stdin, both, '-', -s, --template.

The provider is `pylon serve` in front of the OpenAI DOUBLE, whose requests show exactly
which messages reached the backend."""

from __future__ import annotations

import pytest

from tests.cli.stack import pylon, serving

pytestmark = pytest.mark.timeout(300)


def _user_text(request: dict) -> str:
    return [m for m in request["messages"] if m["role"] == "user"][-1]["content"]


async def test_prompt_sources(relay_url, openai_double, tmp_path):
    async with serving(relay_url, openai_double.base_url, tmp_path) as stack:
        code, out, err = await stack.ask(stdin=b"hi from a pipe\n")  # `echo ... | pylon ask`
        assert code == 0, err
        assert _user_text(openai_double.requests[-1]) == "hi from a pipe"
        assert out.endswith("hi from a pipe\n")

        code, out, err = await stack.ask("summarise this", stdin=b"line one\nline two\n")  # both, like llm
        assert code == 0, err
        assert _user_text(openai_double.requests[-1]) == "line one\nline two\n\nsummarise this"

        code, out, err = await stack.ask("-", stdin=b"only stdin")
        assert code == 0, err
        assert _user_text(openai_double.requests[-1]) == "only stdin"

        code, out, err = await stack.ask("just the argument")  # stdin is /dev/null: not read
        assert code == 0, err
        assert openai_double.requests[-1]["messages"] == [{"role": "user", "content": "just the argument"}]

        code, out, err = await stack.ask("-s", "Answer in French.", "capital of France?")
        assert code == 0, err
        assert openai_double.requests[-1]["messages"] == [
            {"role": "system", "content": "Answer in French."}, {"role": "user", "content": "capital of France?"}]

        # a saved template: system + prompt with $input + defaults; flags still override
        code, out, err = await stack.run("template", "save", "tldr", "--system", "Be terse.",
                                         "--prompt", "TL;DR of:\n$input", "--max-tokens", "7")
        assert code == 0, err
        code, out, err = await stack.run("template", "list", "--json")
        assert code == 0 and out.strip() == '[\n  "tldr"\n]', (out, err)
        n = len(openai_double.requests)
        code, out, err = await stack.ask("--template", "tldr", stdin=b"a long text")
        assert code == 0, err
        sent = openai_double.requests[n]
        assert sent["messages"] == [{"role": "system", "content": "Be terse."},
                                    {"role": "user", "content": "TL;DR of:\na long text"}]
        assert sent["max_tokens"] == 7
        code, out, err = await stack.ask("--template", "tldr", "--max-tokens", "9", "x")
        assert code == 0 and openai_double.requests[-1]["max_tokens"] == 9, err


async def test_no_prompt_and_unknown_template_are_one_line_errors(tmp_path):
    home = tmp_path / "home"
    code, out, err = await pylon("ask", home=home)  # stdin /dev/null, no argument
    assert code == 2 and out == "" and "no prompt given" in err and "Traceback" not in err
    code, out, err = await pylon("ask", "-", home=home, stdin=b"")
    assert code == 2 and "stdin was empty" in err
    code, out, err = await pylon("ask", "--template", "nope", "x", home=home)
    assert code == 2 and "no template named 'nope'" in err and "Traceback" not in err
    code, out, err = await pylon("template", "save", "../evil", "--prompt", "x", home=home)
    assert code == 2 and "invalid template name" in err
