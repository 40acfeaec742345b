"""NIP-90 text generation (kind 5050): typed requests, feedback and results <-> events.

NIP-90 is loose and peers in the wild are looser, so every parser here is defensive: a
malformed event yields a `JobParseError` naming the problem, never some other exception,
so a subscription loop can log it and move on.

Wire decisions (the specs leave these open; this is what Pylon writes and reads):

* Input. Plain prompts are one `["i", text, "text"]` tag; the kind-5050 page's
  `["i", text, "prompt"]` is read as text too. Several text inputs are joined with a blank
  line. Chat input (a list of `{"role", "content"}` messages, e.g. DSPy's system + user)
  goes as `["param", "messages", "<JSON array>"]` *and* an `i` text tag holding a plain
  transcript of the same messages. Pylon providers use the param and keep the turns
  unflattened; providers elsewhere ignore the unknown param and still see a readable
  prompt. When reading, an `["i", "<JSON array>", "text", "", "messages"]` tag (the marker
  form some clients use) is accepted as chat input too. A single user message with no
  system turn is sent as a plain prompt.
* Params: model, max_tokens, temperature, top_p (or top-p), top_k (or top-k),
  frequency_penalty, seed, stop (one tag, several values), and response_format (an
  OpenAI `response_format` object as JSON, e.g. `{"type": "json_schema", ...}`).
  Numbers are parsed leniently ("100_000", " 0.5 "); NaN, infinities and negatives where
  they make no sense are refused. Unknown params are kept in `extra_params`.
* Results (kind 6050) carry `["e", request]`, `["p", customer]`, `["request", <request
  JSON>]` (left out when the request is over 16 KiB, to keep the result under relay
  event-size limits), `["amount", msat, bolt11?]`, `["model", name]`,
  `["usage", prompt_tokens, completion_tokens]` and `["finish_reason", reason]` (Pylon's
  extension: the backend's OpenAI finish reason, "stop" or "length" when the answer was cut
  at max_tokens; absent when the backend gave none). The `i` tags are not repeated: the
  request tag already holds them.
* Streaming: `partial` feedback whose content is the *delta* of new text, with
  `["offset", n]` giving the character offset of that delta in the full answer, so a
  client can reassemble it in order, drop duplicates and detect gaps. The final result
  always carries the whole text; partials are for display.
* Encrypted jobs (one targeted provider): the `i` and `param` tags are a JSON array
  encrypted with NIP-44 v2 into the content; the event carries `["p", provider]` and
  `["encrypted"]`. Feedback and result contents are encrypted back and tagged
  `["encrypted"]`; status, amount, usage and offset tags stay in clear (a relay needs
  none of them, but a customer's wallet and UI do). NIP-04 payloads are decrypted too.
* Cancellation: a kind-5 deletion with `["e", request_id]` and `["k", "5050"]`.
* Uniqueness: every request Pylon signs carries `["pylon-nonce", <16 random hex>]`. Without
  it, the same prompt signed twice within one second is the same event (same id) and relays
  and providers dedupe it, so DSPy's `n>1` and retries would collapse into one job. The
  name is ours on purpose: NIP-13's `nonce` tag means proof of work, and a peer checking
  PoW must not mistake this for a difficulty claim. Peers ignore the unknown tag.
* Avoided providers: `["pylon-avoid", <hex pubkey>]`, one tag per provider (at most
  MAX_AVOID), in clear. The customer will not take this provider's answer (a failover re-send
  after it failed, or the user's `--avoid`): a Pylon provider named there skips the request
  without a word (`avoids`), so it does not run the job again for nothing. Why a tag of our
  own and not `["param", "avoid", ...]` or a `p`-like tag: NIP-90's `param` is defined per job
  kind as a job parameter (some DVMs pass unknown params on to their backend, and Pylon
  encrypts params for one provider), and `p` means "providers the customer is interested in";
  neither NIP-90 nor the data-vending-machines kind pages define an exclusion. An unknown tag
  is ignored by every other DVM (NIP-01), so they still see a plain job; the cost is that the
  list is public.
* Payments: a bid is `["bid", msat]`; `payment-required` feedback carries
  `["amount", msat, bolt11]`; a bid below the price gets `error` feedback whose status
  extra says the price and `["amount", price]` (see pylon.provider.payments).
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

from pylon.errors import JobError
from pylon.nostr import kinds
from pylon.nostr.event import Event
from pylon.nostr.keys import Keys, normalize_pubkey

KIND_REQUEST = kinds.JOB_REQUEST_TEXT  # 5050
KIND_RESULT = kinds.JOB_RESULT_TEXT  # 6050
KIND_FEEDBACK = kinds.JOB_FEEDBACK  # 7000
KIND_DELETION = kinds.DELETION  # 5

FeedbackStatus = Literal["payment-required", "processing", "error", "success", "partial"]
STATUSES: frozenset[str] = frozenset({"payment-required", "processing", "error", "success", "partial"})
ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool", "developer"})

#: results leave the request tag out above this size (relays cap events at ~64 KiB)
MAX_REQUEST_TAG_BYTES = 16 * 1024
#: refuse absurd inputs early (a relay would refuse such an event anyway)
MAX_INPUT_CHARS = 1_000_000
#: finish reasons are short words ("stop", "length"); anything longer is cut
MAX_FINISH_REASON = 32
#: a random tag on every request we sign, so identical asks are distinct events (see above)
NONCE_TAG = "pylon-nonce"
#: providers the customer will not take an answer from (see above); at most MAX_AVOID are sent
AVOID_TAG = "pylon-avoid"
MAX_AVOID = 64
#: the most an encrypted (targeted) request's tags may take as JSON: NIP-44 v2's plaintext limit
MAX_ENCRYPTED_BYTES = 65_535


class JobParseError(JobError, ValueError):
    """An event is not a usable NIP-90 kind-5050 request, feedback or result."""


# ----------------------------------------------------------------------------------------
# lenient scalar parsing
# ----------------------------------------------------------------------------------------

def parse_int(value: Any, what: str, *, minimum: int | None = 0) -> int:
    """An integer from a tag value: tolerates spaces, '_' and ',' separators, "12.0"."""
    if isinstance(value, bool):
        raise JobParseError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip().replace("_", "").replace(",", "")
        try:
            number = int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                raise JobParseError(f"{what} must be an integer, got {str(value)[:40]!r}") from None
            if not math.isfinite(as_float) or as_float != int(as_float):
                raise JobParseError(f"{what} must be an integer, got {str(value)[:40]!r}")
            number = int(as_float)
    if minimum is not None and number < minimum:
        raise JobParseError(f"{what} must be >= {minimum}, got {number}")
    return number


def parse_float(value: Any, what: str, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite float from a tag value (spaces and '_' tolerated)."""
    try:
        number = float(str(value).strip().replace("_", ""))
    except ValueError:
        raise JobParseError(f"{what} must be a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise JobParseError(f"{what} must be a finite number, got {str(value)[:40]!r}")
    if minimum is not None and number < minimum:
        raise JobParseError(f"{what} must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise JobParseError(f"{what} must be <= {maximum}, got {number}")
    return number


def _pubkey(value: str, what: str) -> str:
    try:
        return normalize_pubkey(value)
    except Exception:
        raise JobParseError(f"{what} is not a valid public key: {str(value)[:20]!r}") from None


def _is_hex_pubkey(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)


def avoids(event: Event, pubkey: str) -> bool:
    """True when the request names `pubkey` (hex, lower case) in an AVOID_TAG: the customer will
    not take its answer, so that provider skips the job. Read from the public tags before any
    parsing or decryption (a cheap check on every request a provider sees)."""
    return any(len(t) >= 2 and t[0] == AVOID_TAG and t[1].lower() == pubkey for t in event.tags)


# ----------------------------------------------------------------------------------------
# messages
# ----------------------------------------------------------------------------------------

def normalize_messages(value: Any) -> list[dict[str, str]]:
    """Validate a chat transcript: a non-empty list of {role, content} with string content."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise JobParseError(f"messages are not valid JSON: {exc}") from None
    if not isinstance(value, list) or not value:
        raise JobParseError("messages must be a non-empty JSON array of {role, content} objects")
    out: list[dict[str, str]] = []
    for n, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise JobParseError(f"message {n} is not an object")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise JobParseError(f"message {n} has an unknown role {str(role)[:20]!r}")
        if isinstance(content, list):  # OpenAI content parts: keep the text parts
            texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            if not all(isinstance(t, str) for t in texts) or not texts:
                raise JobParseError(f"message {n} has content parts without text")
            content = "".join(str(t) for t in texts)  # all str (checked above)
        if not isinstance(content, str):
            raise JobParseError(f"message {n} content must be a string")
        out.append({"role": role, "content": content})
    return out


def transcript(messages: Sequence[dict[str, str]]) -> str:
    """A plain-text rendering of a chat for providers that only read `i` text."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    parts = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(parts)


def _is_plain_prompt(messages: Sequence[dict[str, str]]) -> bool:
    return len(messages) == 1 and messages[0]["role"] == "user"


# ----------------------------------------------------------------------------------------
# requests
# ----------------------------------------------------------------------------------------

_FLOAT_PARAMS = {
    "temperature": ("temperature", 0.0, 10.0),
    "top_p": ("top_p", 0.0, 1.0),
    "top-p": ("top_p", 0.0, 1.0),
    "frequency_penalty": ("frequency_penalty", -10.0, 10.0),
    "frequency-penalty": ("frequency_penalty", -10.0, 10.0),
}
_INT_PARAMS = {
    "max_tokens": "max_tokens",
    "max-tokens": "max_tokens",
    "top_k": "top_k",
    "top-k": "top_k",
    "seed": "seed",
}


@dataclass(slots=True)
class JobRequest:
    """A kind-5050 job: what to generate, how, for whom and for how much.

    Built by clients (`to_event`) and parsed by providers (`from_event`). The source event's
    id, author and time are filled in by `from_event` / `to_event`.
    """

    messages: list[dict[str, str]]
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None  # OpenAI function tools, passed to the backend as they are
    tool_choice: str | dict[str, Any] | None = None
    output: str | None = None
    bid_msat: int | None = None
    relays: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)  # p tags (hex)
    avoid: list[str] = field(default_factory=list)  # AVOID_TAG tags (hex): providers that should skip it
    extra_params: dict[str, str] = field(default_factory=dict)
    encrypted: bool = False
    stream: bool = False  # ["param", "stream", "true"]: the customer reads `partial` feedback as it comes
    # filled from the event
    id: str = ""
    customer: str = ""
    created_at: int = 0
    event: Event | None = None

    # -- convenience ------------------------------------------------------------------
    @classmethod
    def from_prompt(cls, prompt: str | Sequence[dict[str, Any]], **kwargs: Any) -> "JobRequest":
        """A request from a plain prompt or a list of chat messages."""
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = normalize_messages(list(prompt))
        return cls(messages=messages, **kwargs)

    @property
    def prompt_text(self) -> str:
        return transcript(self.messages)

    def addressed_to(self, pubkey: str) -> bool:
        """True when the request names no provider, or names `pubkey` among them."""
        return not self.providers or pubkey in self.providers

    # -- building ---------------------------------------------------------------------
    def private_tags(self) -> list[list[str]]:
        """The `i` and `param` tags (the part that is encrypted for one provider)."""
        tags: list[list[str]] = [["i", transcript(self.messages), "text"]]
        if not _is_plain_prompt(self.messages):
            tags.append(["param", "messages", json.dumps(self.messages, ensure_ascii=False, separators=(",", ":"))])
        if self.model:
            tags.append(["param", "model", self.model])
        if self.max_tokens is not None:
            tags.append(["param", "max_tokens", str(int(self.max_tokens))])
        for name in ("temperature", "top_p", "frequency_penalty"):
            value = getattr(self, name)
            if value is not None:
                tags.append(["param", name, repr(float(value))])
        if self.top_k is not None:
            tags.append(["param", "top_k", str(int(self.top_k))])
        if self.seed is not None:
            tags.append(["param", "seed", str(int(self.seed))])
        if self.stop:
            tags.append(["param", "stop", *self.stop])
        if self.response_format is not None:
            tags.append(["param", "response_format", json.dumps(self.response_format, separators=(",", ":"))])
        if self.tools:
            tags.append(["param", "tools", json.dumps(self.tools, ensure_ascii=False, separators=(",", ":"))])
        if self.tool_choice is not None:
            choice = self.tool_choice
            tags.append(["param", "tool_choice",
                         choice if isinstance(choice, str) else json.dumps(choice, separators=(",", ":"))])
        if self.stream:
            tags.append(["param", "stream", "true"])
        for key, value in self.extra_params.items():
            tags.append(["param", key, value])
        return tags

    def to_event(self, keys: Keys, *, encrypted: bool | None = None, created_at: int | None = None) -> Event:
        """Sign the request. `encrypted` needs exactly one provider in `providers`."""
        encrypt = self.encrypted if encrypted is None else encrypted
        public: list[list[str]] = []
        if self.output:
            public.append(["output", self.output])
        if self.bid_msat is not None:
            public.append(["bid", str(int(self.bid_msat))])
        if self.relays:
            public.append(["relays", *self.relays])
        public.append([NONCE_TAG, secrets.token_hex(8)])
        public += [[AVOID_TAG, p] for p in dict.fromkeys(_pubkey(a, "avoided provider") for a in self.avoid[:MAX_AVOID])]
        providers = [_pubkey(p, "provider") for p in self.providers]
        if encrypt:
            if len(providers) != 1:
                raise JobParseError("an encrypted job must target exactly one provider (pass provider=...)")
            from pylon.nostr.crypto import encrypt_to

            payload = json.dumps(self.private_tags(), ensure_ascii=False, separators=(",", ":"))
            size = len(payload.encode("utf-8"))
            if size > MAX_ENCRYPTED_BYTES:  # NIP-44 v2 pads at most 65,535 bytes; say so before nip44 does
                raise JobParseError(
                    f"the job is {size:,} bytes, too long to encrypt for one provider: NIP-44 allows "
                    f"{MAX_ENCRYPTED_BYTES:,} bytes",
                    hint="shorten the prompt, or send the job unencrypted (--no-encrypt, encrypted=False): "
                         "then the relays and anyone reading them see it")
            content = encrypt_to(keys, providers[0], payload)
            tags = [["p", providers[0]], ["encrypted"], *public]
        else:
            content = ""
            tags = [*self.private_tags(), *public, *(["p", p] for p in providers)]
        event = Event.build(keys, KIND_REQUEST, content, tags, created_at=created_at)
        self.providers = providers
        self.encrypted = encrypt
        self.id, self.customer, self.created_at, self.event = event.id, event.pubkey, event.created_at, event
        return event

    # -- parsing ----------------------------------------------------------------------
    @classmethod
    def from_event(cls, event: Event, keys: Keys | None = None) -> "JobRequest":
        """Parse a kind-5050 event; `keys` (the provider's) decrypt an encrypted one.

        Raises JobParseError for anything unusable, with a message fit for `error` feedback.
        """
        if event.kind != KIND_REQUEST:
            raise JobParseError(f"not a kind-{KIND_REQUEST} job request (kind {event.kind})")
        try:
            return cls._parse(event, keys)
        except JobParseError:
            raise
        except Exception as exc:  # defensive: nothing else escapes a parse
            raise JobParseError(f"malformed job request: {type(exc).__name__}: {exc}") from None

    @classmethod
    def _parse(cls, event: Event, keys: Keys | None) -> "JobRequest":
        tags = event.tags
        providers = []
        for t in tags:
            if len(t) >= 2 and t[0] == "p":
                try:
                    providers.append(normalize_pubkey(t[1]))
                except Exception:
                    continue  # a junk p tag addresses nobody
        encrypted = any(t and t[0] == "encrypted" for t in tags)
        if encrypted:
            if keys is None:
                raise JobParseError("encrypted job request and no key to decrypt it")
            if keys.public_key not in providers:
                raise JobParseError("encrypted job request addressed to another provider")
            tags = [*tags, *_decrypt_tags(keys, event.pubkey, event.content)]

        req = cls(messages=[], providers=providers, encrypted=encrypted)
        texts: list[str] = []
        marker_messages: list[dict[str, str]] | None = None
        for t in tags:
            if not t:
                continue
            name = t[0]
            if name == "i":
                if len(t) < 2:
                    raise JobParseError("an 'i' tag has no data")
                itype = t[2].strip().lower() if len(t) >= 3 else "text"
                marker = t[4].strip().lower() if len(t) >= 5 else ""
                if itype in ("text", "prompt", ""):
                    if marker == "messages":
                        marker_messages = normalize_messages(t[1])
                    else:
                        texts.append(t[1])
                elif itype in ("url", "event", "job"):
                    raise JobParseError(f"input type {itype!r} is not supported by this provider; send the text itself")
                else:
                    raise JobParseError(f"unknown input type {itype[:20]!r} (expected text or prompt)")
            elif name == "param":
                if len(t) < 3:
                    raise JobParseError(f"param tag {t[1][:30] if len(t) > 1 else ''!r} has no value")
                req._set_param(t[1].strip(), t[2:])
            elif name == "output" and len(t) >= 2:
                req.output = t[1]
            elif name == "bid" and len(t) >= 2:
                req.bid_msat = parse_int(t[1], "bid")
            elif name == "relays":
                req.relays = [u for u in t[1:] if u.startswith(("ws://", "wss://"))]
            elif name == AVOID_TAG and len(req.avoid) < MAX_AVOID:
                req.avoid += [v.lower() for v in t[1:2] if _is_hex_pubkey(v)]

        if req.messages:  # a messages param wins: it is the unflattened form
            pass
        elif marker_messages is not None:
            req.messages = marker_messages
        elif texts:
            text = "\n\n".join(x for x in texts if x)
            if not text.strip():
                raise JobParseError("the job's text input is empty")
            req.messages = [{"role": "user", "content": text}]
        else:
            raise JobParseError("the job has no text input (expected an ['i', <text>, 'text'] tag)")
        if sum(len(m["content"]) for m in req.messages) > MAX_INPUT_CHARS:
            raise JobParseError(f"the job's input is over {MAX_INPUT_CHARS} characters")
        req.id, req.customer, req.created_at, req.event = event.id, event.pubkey, event.created_at, event
        return req

    def _set_param(self, key: str, values: list[str]) -> None:
        value = values[0]
        lkey = key.lower()
        if lkey == "model":
            self.model = value.strip() or None
        elif lkey in _INT_PARAMS:
            attr = _INT_PARAMS[lkey]
            setattr(self, attr, parse_int(value, attr, minimum=None if attr == "seed" else 1 if attr == "max_tokens" else 0))
        elif lkey in _FLOAT_PARAMS:
            attr, lo, hi = _FLOAT_PARAMS[lkey]
            setattr(self, attr, parse_float(value, attr, minimum=lo, maximum=hi))
        elif lkey == "messages":
            self.messages = normalize_messages(value)
        elif lkey == "stop":
            stops = values
            if len(values) == 1 and value.lstrip().startswith("["):
                try:
                    stops = json.loads(value)
                except ValueError:
                    raise JobParseError("stop must be a string or a JSON array of strings") from None
            if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
                raise JobParseError("stop must be a string or a JSON array of strings")
            self.stop = [s for s in stops if s][:4] or None
        elif lkey in ("response_format", "response-format"):
            try:
                fmt = json.loads(value)
            except ValueError as exc:
                raise JobParseError(f"response_format is not valid JSON: {exc}") from None
            if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
                raise JobParseError("response_format must be a JSON object with a 'type'")
            self.response_format = fmt
        elif lkey == "tools":
            self.tools = _parse_tools(value)
        elif lkey in ("tool_choice", "tool-choice"):
            self.tool_choice = _parse_tool_choice(value)
        elif lkey == "stream":
            self.stream = value.strip().lower() in ("true", "1", "yes")
        else:
            self.extra_params[key] = value


MAX_TOOLS = 128


def _parse_tools(value: str) -> list[dict[str, Any]]:
    """The `tools` param: a JSON array of OpenAI function tools ({"type": "function", ...})."""
    try:
        tools = json.loads(value)
    except ValueError as exc:
        raise JobParseError(f"tools is not valid JSON: {exc}") from None
    if not isinstance(tools, list) or not 0 < len(tools) <= MAX_TOOLS:
        raise JobParseError(f"tools must be a JSON array of 1 to {MAX_TOOLS} tool objects")
    for n, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict) \
                or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise JobParseError(f"tool {n} must be {{'type': 'function', 'function': {{'name': ...}}}}")
    return tools


def _parse_tool_choice(value: str) -> str | dict[str, Any]:
    """`auto`, `none`, `required`, or a JSON object naming one function."""
    if value in ("auto", "none", "required"):
        return value
    try:
        choice = json.loads(value)
    except ValueError:
        raise JobParseError("tool_choice must be auto, none, required or a JSON object") from None
    if isinstance(choice, str) and choice in ("auto", "none", "required"):
        return choice
    if not isinstance(choice, dict) or choice.get("type") != "function":
        raise JobParseError("tool_choice must be auto, none, required or {'type': 'function', ...}")
    return choice


def parse_tool_calls(value: str) -> list[dict[str, Any]]:
    """A result's tool calls: a JSON array of OpenAI `tool_calls` entries."""
    try:
        calls = json.loads(value)
    except ValueError as exc:
        raise JobParseError(f"tool_calls is not valid JSON: {exc}") from None
    if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("function"), dict)
                                               for c in calls):
        raise JobParseError("tool_calls must be a JSON array of {'id', 'type', 'function'} objects")
    return calls


def _decrypt_tags(keys: Keys, peer: str, content: str) -> list[list[str]]:
    """The `i`/`param` tags hidden in an encrypted request's content."""
    from pylon.nostr.crypto import decrypt_from

    if not content:
        raise JobParseError("encrypted job request has empty content")
    try:
        plain = decrypt_from(keys, peer, content)
    except Exception as exc:
        raise JobParseError(f"could not decrypt the job request: {exc}") from None
    data = _tag_array(plain)
    if data is None:
        raise JobParseError("decrypted job request is not a JSON array of tags")
    return [t for t in data if t and t[0] in ("i", "param")]


def _tag_array(plain: str) -> list[list[str]] | None:
    """`plain` read as a JSON array of tags (arrays of strings), as encrypted requests and
    feedback carry them; None when it is not one."""
    try:
        data = json.loads(plain)
    except ValueError:
        return None
    if not isinstance(data, list) or not all(isinstance(t, list) and all(isinstance(x, str) for x in t) for t in data):
        return None
    return data


# ----------------------------------------------------------------------------------------
# feedback and results
# ----------------------------------------------------------------------------------------

def _reply_tags(request: JobRequest) -> list[list[str]]:
    tags = [["e", request.id], ["p", request.customer]]
    if request.encrypted:
        tags.append(["encrypted"])
    return tags


def _seal(keys: Keys, request: JobRequest, text: str) -> str:
    if not request.encrypted or not text:
        return text
    from pylon.nostr.crypto import encrypt_to

    return encrypt_to(keys, request.customer, text)


def _amount_tag(amount_msat: int | None, bolt11: str | None) -> list[list[str]]:
    if amount_msat is None:
        return []
    tag = ["amount", str(int(amount_msat))]
    if bolt11:
        tag.append(bolt11)
    return [tag]


@dataclass(slots=True)
class JobFeedback:
    """A kind-7000 status update for one job."""

    status: str
    request_id: str
    customer: str
    provider: str = ""
    extra: str = ""
    content: str = ""
    amount_msat: int | None = None
    bolt11: str | None = None
    offset: int | None = None  # for partial: character offset of `content` in the answer
    encrypted: bool = False
    created_at: int = 0
    event: Event | None = None

    @staticmethod
    def build(
        keys: Keys,
        request: JobRequest,
        status: FeedbackStatus,
        *,
        extra: str = "",
        content: str = "",
        amount_msat: int | None = None,
        bolt11: str | None = None,
        offset: int | None = None,
        extra_tags: list[list[str]] | None = None,
    ) -> Event:
        """Sign feedback for `request` (content encrypted when the request was); `extra_tags`
        carry extensions such as a refund offer (`["refund", msat]`, pylon.jobs.refund)."""
        if status not in STATUSES:
            raise ValueError(f"unknown feedback status {status!r}")
        status_tag = ["status", status] + ([extra] if extra else [])
        tags = [status_tag, *_reply_tags(request), *_amount_tag(amount_msat, bolt11)]
        if offset is not None:
            tags.append(["offset", str(int(offset))])
        tags += extra_tags or []
        if request.encrypted:
            # Emit what both sides read: status/amount stay in clear (relays, Pylon, NIP-90) and
            # the content is the tag array nostrdvm seals (its bot drops encrypted feedback whose
            # content is not one); the text travels in its ["content", text] tag.
            sealed = [status_tag, *_amount_tag(amount_msat, bolt11)] + ([["content", content]] if content else [])
            return Event.build(keys, KIND_FEEDBACK, _seal(keys, request, json.dumps(sealed)), tags)
        return Event.build(keys, KIND_FEEDBACK, _seal(keys, request, content), tags)

    @classmethod
    def from_event(cls, event: Event, keys: Keys | None = None) -> "JobFeedback":
        """Parse feedback; `keys` (the customer's) decrypt an encrypted content."""
        if event.kind != KIND_FEEDBACK:
            raise JobParseError(f"not a kind-{KIND_FEEDBACK} feedback event (kind {event.kind})")
        try:
            status_tag = event.first_tag("status")
            request_id, customer, encrypted = _reply_header(event)
            sealed: Event | None = None
            if (not status_tag or len(status_tag) < 2) and encrypted:
                # nostrdvm: status, amount and content sealed in the content as a JSON tag array
                sealed = _sealed_tags(keys, event)
                status_tag = sealed.first_tag("status")
            elif encrypted and event.content:
                # Pylon >= issue 14 seals the same tags beside the clear ones; older Pylon sent
                # the bare text (kept: a content that is not such an array is the text itself)
                sealed = _sealed_or_none(keys, event, status_tag)
            if not status_tag or len(status_tag) < 2:
                raise JobParseError("feedback has no status tag")
            status = status_tag[1].strip().lower()
            if status not in STATUSES:
                raise JobParseError(f"feedback has an unknown status {status[:30]!r}")
            amount, bolt11 = _parse_amount(sealed if sealed is not None and sealed.first_tag("amount") else event)
            offset_tag = event.first_tag("offset")
            offset = parse_int(offset_tag[1], "offset") if offset_tag and len(offset_tag) > 1 else None
            if sealed is not None:
                content_tag = sealed.first_tag("content")
                content = content_tag[1] if content_tag and len(content_tag) > 1 else ""
            else:
                content = _open(keys, event, encrypted)
            return cls(status, request_id, customer, event.pubkey, status_tag[2] if len(status_tag) > 2 else "",
                       content, amount, bolt11, offset, encrypted, event.created_at, event)
        except JobParseError:
            raise
        except Exception as exc:
            raise JobParseError(f"malformed feedback: {type(exc).__name__}: {exc}") from None


@dataclass(slots=True)
class JobResult:
    """A kind-6050 result: the generated text, its usage and the price asked."""

    text: str
    request_id: str
    customer: str
    provider: str = ""
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    amount_msat: int | None = None
    bolt11: str | None = None
    encrypted: bool = False
    request_json: str | None = None
    created_at: int = 0
    event: Event | None = None
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    @staticmethod
    def build(keys: Keys, request: JobRequest, text: str, **fields: Any) -> Event:
        """Sign the result for `request` (content encrypted when the request was); `fields`
        are `parts`'s keyword arguments (model, usage, amount, finish reason, tool calls).

        Tool calls travel in a `["tool_calls", <JSON array>]` tag, encrypted like the content
        when the request was encrypted."""
        content, tags = JobResult.parts(keys, request, text, **fields)
        return Event.build(keys, KIND_RESULT, content, tags)

    @staticmethod
    def parts(
        keys: Keys,
        request: JobRequest,
        text: str,
        *,
        model: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        amount_msat: int | None = 0,
        bolt11: str | None = None,
        finish_reason: str | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> tuple[str, list[list[str]]]:
        """The result's content and tags, unsigned (`build` signs them; a sealed result for
        pay-for-the-key seals the content first and signs once)."""
        tags = _reply_tags(request)
        if request.event is not None:
            raw = request.event.to_json()
            if len(raw.encode()) <= MAX_REQUEST_TAG_BYTES:
                tags.append(["request", raw])
        tags += _amount_tag(amount_msat, bolt11)
        if model:
            tags.append(["model", model])
        if prompt_tokens is not None or completion_tokens is not None:
            tags.append(["usage", str(int(prompt_tokens or 0)), str(int(completion_tokens or 0))])
        if finish_reason:
            tags.append(["finish_reason", str(finish_reason)[:MAX_FINISH_REASON]])
        if tool_calls:
            calls = json.dumps(tool_calls, ensure_ascii=False, separators=(",", ":"))
            tags.append(["tool_calls", _seal(keys, request, calls)])
        return _seal(keys, request, text), tags

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)

    @classmethod
    def from_event(cls, event: Event, keys: Keys | None = None) -> "JobResult":
        """Parse a result; `keys` (the customer's) decrypt an encrypted content."""
        if event.kind != KIND_RESULT:
            raise JobParseError(f"not a kind-{KIND_RESULT} result (kind {event.kind})")
        try:
            request_id, customer, encrypted = _reply_header(event)
            amount, bolt11 = _parse_amount(event)
            usage = event.first_tag("usage")
            prompt_tokens = completion_tokens = None
            if usage is not None:
                if len(usage) < 3:
                    raise JobParseError("usage tag must be ['usage', prompt_tokens, completion_tokens]")
                prompt_tokens = parse_int(usage[1], "usage prompt_tokens")
                completion_tokens = parse_int(usage[2], "usage completion_tokens")
            model_tag = event.first_tag("model")
            request_tag = event.first_tag("request")
            finish_tag = event.first_tag("finish_reason")
            text = _open(keys, event, encrypted)
            calls_tag = event.first_tag("tool_calls")
            tool_calls = None
            if calls_tag is not None and len(calls_tag) > 1 and calls_tag[1]:
                tool_calls = parse_tool_calls(_open_text(keys, event, encrypted, calls_tag[1]))
            result = cls(text, request_id, customer, event.pubkey,
                       model_tag[1] if model_tag and len(model_tag) > 1 else None,
                       prompt_tokens, completion_tokens, amount, bolt11, encrypted,
                       request_tag[1] if request_tag and len(request_tag) > 1 else None,
                       event.created_at, event,
                       finish_tag[1][:MAX_FINISH_REASON] if finish_tag and len(finish_tag) > 1 and finish_tag[1]
                       else None)
            result.tool_calls = tool_calls
            return result
        except JobParseError:
            raise
        except Exception as exc:
            raise JobParseError(f"malformed result: {type(exc).__name__}: {exc}") from None


def _reply_header(event: Event) -> tuple[str, str, bool]:
    e_tag = event.first_tag("e")
    if not e_tag or len(e_tag) < 2 or len(e_tag[1]) != 64:
        raise JobParseError("reply has no valid ['e', <request id>] tag")
    p_tag = event.first_tag("p")
    customer = ""
    if p_tag and len(p_tag) >= 2:
        customer = _pubkey(p_tag[1], "customer ('p' tag)")
    encrypted = any(t and t[0] == "encrypted" for t in event.tags)
    return e_tag[1].lower(), customer, encrypted


def _parse_amount(event: Event) -> tuple[int | None, str | None]:
    tag = event.first_tag("amount")
    if not tag or len(tag) < 2:
        return None, None
    amount = parse_int(tag[1], "amount")
    bolt11 = tag[2].strip() if len(tag) > 2 and tag[2].strip() else None
    return amount, bolt11


def _sealed_tags(keys: Keys | None, event: Event) -> Event:
    """The tags nostrdvm seals into an encrypted feedback's content (`[["status", …], ["amount",
    msat, bolt11?], ["content", text], …]`), as an unsigned stand-in event to read them from."""
    data = _tag_array(_open(keys, event, True))
    if data is None:
        raise JobParseError("encrypted feedback has no status tag and its content is not a tag array")
    return _stand_in(event, data)


def _sealed_or_none(keys: Keys | None, event: Event, status_tag: list[str] | None) -> Event | None:
    """The sealed tag array of an encrypted feedback that also has a clear status, when its
    content is one whose status matches the clear one; None when the content is plain text."""
    plain = _open(keys, event, True)
    data = _tag_array(plain) if plain.startswith("[[") else None
    if data is None or not all(data):
        return None
    sealed_status = next((t for t in data if t[0] == "status" and len(t) > 1), None)
    if sealed_status is None or status_tag is None or sealed_status[1] != status_tag[1]:
        return None
    return _stand_in(event, data)


def _stand_in(event: Event, tags: list[list[str]]) -> Event:
    """An unsigned stand-in for `event` carrying its sealed `tags`, to read them with first_tag."""
    return Event(id=event.id, pubkey=event.pubkey, created_at=event.created_at, kind=event.kind, tags=tags,
                 content="", sig=event.sig)


def _open(keys: Keys | None, event: Event, encrypted: bool) -> str:
    return _open_text(keys, event, encrypted, event.content)


def _open_text(keys: Keys | None, event: Event, encrypted: bool, payload: str) -> str:
    """`payload` (the content or a sealed tag value) decrypted when the reply is encrypted."""
    if not encrypted or not payload:
        return payload
    if keys is None:
        raise JobParseError("encrypted reply and no key to decrypt it")
    from pylon.nostr.crypto import decrypt_from

    try:
        return decrypt_from(keys, event.pubkey, payload)
    except Exception as exc:
        raise JobParseError(f"could not decrypt the reply from {event.pubkey[:12]}…: {exc}") from None


# ----------------------------------------------------------------------------------------
# cancellation
# ----------------------------------------------------------------------------------------

def build_cancellation(keys: Keys, request_ids: Iterable[str], reason: str = "cancelled by the customer") -> Event:
    """A NIP-09 deletion of our own job request(s): how NIP-90 cancels a job."""
    tags = [["e", rid] for rid in request_ids]
    if not tags:
        raise ValueError("nothing to cancel")
    tags.append(["k", str(KIND_REQUEST)])
    return Event.build(keys, KIND_DELETION, reason, tags)


def parse_cancellation(event: Event) -> list[str]:
    """The job request ids a kind-5 deletion cancels (empty if it is about other kinds).

    Only the requests' author may cancel them: the caller checks that the deleted
    request's customer equals `event.pubkey`.
    """
    if event.kind != KIND_DELETION:
        return []
    k_values = [t[1] for t in event.tags if len(t) >= 2 and t[0] == "k"]
    if k_values and str(KIND_REQUEST) not in k_values:
        return []
    return [t[1].lower() for t in event.tags if len(t) >= 2 and t[0] == "e" and len(t[1]) == 64]
