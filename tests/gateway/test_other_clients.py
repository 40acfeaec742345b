"""Tools that already speak OpenAI's API, unchanged, against the gateway over a provider on
the real CPU vLLM: Simon Willison's `llm` CLI (model registered in extra-openai-models.yaml),
LiteLLM's `completion()` with `api_base`, and a DSPy program through plain `dspy.LM("openai/…")`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

LLM_BIN = Path(sys.executable).with_name("llm")


@pytest.mark.skipif(not LLM_BIN.exists(), reason="the llm CLI is not installed (dev extra)")
async def test_llm_cli(vllm_stack, tmp_path):
    user_dir = tmp_path / "llm-home"
    user_dir.mkdir()
    (user_dir / "extra-openai-models.yaml").write_text(
        f"- model_id: swarm-tiny\n  model_name: {vllm_stack.model}\n  api_base: \"{vllm_stack.base_url}\"\n")
    env = {**os.environ, "LLM_USER_PATH": str(user_dir), "OPENAI_API_KEY": "unused"}
    proc = await asyncio.create_subprocess_exec(
        str(LLM_BIN), "-m", "swarm-tiny", "-o", "max_tokens", "8", "Say hi to the swarm",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert out.strip(), "llm printed no answer"


async def test_litellm_completion(vllm_stack, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "true")
    import litellm

    resp = await asyncio.to_thread(
        litellm.completion, model=f"openai/{vllm_stack.model}", api_base=vllm_stack.base_url, api_key="unused",
        messages=[{"role": "user", "content": "hello"}], max_tokens=8, num_retries=0)
    assert isinstance(resp.choices[0].message.content, str)
    assert resp.usage.completion_tokens >= 1


async def test_dspy_program_through_plain_dspy_lm(vllm_stack, monkeypatch, tmp_path):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "true")
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy-cache"))
    import dspy

    # The tiny model's context is 512 tokens: a short signature with closed output types fits.
    # litellm's catalog doesn't know the swarm's model names, so DSPy would send no
    # response_format by itself; the schema is passed as an LM argument, which DSPy forwards.
    schema = {"type": "object", "additionalProperties": False, "required": ["ok", "pick"],
              "properties": {"ok": {"type": "boolean"}, "pick": {"type": "string", "enum": ["a", "b"]}}}
    lm = dspy.LM(f"openai/{vllm_stack.model}", api_base=vllm_stack.base_url, api_key="unused", cache=False,
                 max_tokens=48, temperature=0.0, num_retries=0,
                 response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": schema}})
    sig = dspy.Signature("q -> ok: bool, pick: Literal['a', 'b']", "Say.")

    def go():
        with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
            return dspy.Predict(sig)(q="2+2=4?")

    out = await asyncio.to_thread(go)
    assert isinstance(out.ok, bool) and out.pick in ("a", "b")
    assert lm.history[-1]["usage"]["completion_tokens"] > 0
