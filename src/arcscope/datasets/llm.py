"""Ask an LLM about each record through any OpenAI-compatible chat-completions endpoint; add its answer as fields.

- **Prompt**: a template with ``{field}`` / ``{a.b}`` placeholders, ``{record}`` (the record as JSON), ``{task}``
  (the ARC task as text) and ``{item}`` (the task when the record is one, else the record); or a preset
  (:data:`PRESETS`, e.g. ``difficulty``: low / medium / high with a rationale).
- **Answer**: a JSON object in the reply (code fences and surrounding prose are tolerated) whose ``fields``
  are added to the record, each checked against its ``choices``; or the whole reply as text.
- **Robustness**: at most ``concurrency`` requests in flight; 429, 5xx, timeouts and dropped connections are
  retried with exponential backoff (``Retry-After`` honoured); a reply that does not parse is asked again
  ``parse_retries`` times, then the record is written with ``enrich_status = "failed"`` and the reason. A
  rejected key (401/403), a wrong URL or model (404) or an endpoint that cannot be reached stops the run
  with one clear error.
- **Cache**: every parsed reply is stored at once in an SQLite file keyed by sha256(endpoint, model, request,
  record hash), so a re-run (after a kill, a crash or a ``--limit`` trial) pays only for what is not there yet,
  and another server with the same model name is asked, not served from the cache.
- **Secrets**: the key is read from the environment variable named by ``api_key_env`` and is only ever put in
  the ``Authorization`` header; it and any credential in the base URL (a password, ``?key=...``) go through
  one :class:`Redactor`, which every record (nested values included), report, cache entry and error passes
  on its way out, so none of them holds a secret: it reads ``***`` instead.
- **Outcome**: a run in which every record failed raises :class:`EnrichError` (CLI: exit 2) saying how many,
  after writing the records with their reasons.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import math
import os
import random
import re
import socket
import sqlite3
import string
import threading
import time
import urllib.parse
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arcscope.datasets.records import (
    DatasetError,
    OnError,
    Rec,
    RecordWriter,
    Skipped,
    dumps,
    get_field,
    read_records,
    record_hash,
)
from arcscope.datasets.step_report import StepReport, config_dict
from arcscope.datasets.steps import _fail_or_skip, _finish, make_config
from arcscope.errors import ArcscopeError
from arcscope.progress import ProgressFn, Ticker

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524})


class EnrichError(DatasetError):
    """The endpoint cannot be used at all (unreachable, key rejected, wrong URL or model)."""


PRESETS: dict[str, dict[str, Any]] = {
    "difficulty": {
        "system": "You are an expert at judging how hard puzzles and programming samples are. Reply with JSON only.",
        "prompt": (
            "Rate the difficulty of the following item for a capable human expert.\n\n"
            "- low: trivial, solved at a glance (copy, recolour, a single simple transformation)\n"
            "- medium: needs a few steps or noticing one non-obvious rule\n"
            "- high: several interacting rules, counting, search or long reasoning\n\n"
            "{item}\n\n"
            'Answer with a JSON object: {{"difficulty": "low" | "medium" | "high", '
            '"rationale": "one or two sentences"}}'
        ),
        "fields": ["difficulty", "rationale"],
        "choices": {"difficulty": ["low", "medium", "high"]},
    },
    "describe": {
        "system": "You describe ARC puzzles precisely and briefly. Reply with JSON only.",
        "prompt": (
            "Describe the rule that turns each input grid into its output grid.\n\n{item}\n\n"
            'Answer with a JSON object: {{"rule": "the rule in one or two sentences"}}'
        ),
        "fields": ["rule"],
        "choices": {},
    },
}
"""Ready-made prompts: name -> system, prompt, fields, choices."""


@dataclass
class EnrichConfig:
    """Settings of the enrich step (the API key itself is never a setting: it comes from the environment)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """OpenAI-compatible API root (the request goes to BASE_URL/chat/completions)."""
    model: str = ""
    """Model name sent with each request."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (unset: no Authorization header is sent)."""
    preset: str | None = None
    """A ready-made prompt from PRESETS ('difficulty', 'describe'); prompt/system/fields/choices override it."""
    prompt: str | None = None
    """User message template: {field}, {a.b}, {record}, {task}, {item}; '{{' for a literal brace."""
    system: str | None = None
    """System message (None: none)."""
    fields: list[str] | str = field(default_factory=list)
    """Answer fields taken from the reply's JSON object and added to the record."""
    choices: dict[str, list[str]] = field(default_factory=dict)
    """Allowed values per answer field; a reply outside them does not parse."""
    answer: str = "json"
    """'json': a JSON object in the reply; 'text': the whole reply goes into the first field."""
    raw_field: str | None = "enrich_raw"
    """Field for the raw reply text (None: not kept)."""
    status_field: str = "enrich_status"
    """Field set to 'ok' or 'failed'; a failed record also gets the reason in 'enrich_error'."""
    concurrency: int = 8
    """Requests in flight at once."""
    max_retries: int = 5
    """Retries of one request after 429, 5xx, a timeout or a dropped connection."""
    parse_retries: int = 2
    """Extra requests when the reply does not parse, before the record is marked failed."""
    backoff: float = 1.0
    """First retry delay in seconds; it doubles each retry (with jitter), up to max_backoff."""
    max_backoff: float = 30.0
    """Longest retry delay, also the cap on a server's Retry-After."""
    timeout: float = 120.0
    """Seconds to wait for one response."""
    temperature: float | None = 0.0
    """Sampling temperature sent with each request (None: the server's default)."""
    max_tokens: int | None = None
    """Completion token limit sent with each request (None: the server's default)."""
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Other request fields (top_p, response_format, ...)."""
    cache: str | None = "default"
    """SQLite cache file; 'default' is the arcscope cache folder, None turns the cache off."""
    encoder: str = "minimal"
    """Grid encoder for {task}."""
    seed: int = 0
    """Seed of the retry jitter."""

    def __post_init__(self) -> None:
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise DatasetError(f"enrich: unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
            p = PRESETS[self.preset]
            self.prompt = self.prompt or p["prompt"]
            self.system = self.system if self.system is not None else p["system"]
            self.fields = self.fields or list(p["fields"])
            self.choices = self.choices or {k: list(v) for k, v in p["choices"].items()}
        if isinstance(self.fields, str):
            self.fields = [f.strip() for f in self.fields.split(",") if f.strip()]
        if not self.prompt:
            raise DatasetError("enrich needs a prompt template (--prompt / --prompt-file) or a --preset")
        if not self.model:
            raise DatasetError("enrich needs a model name (--model)")
        if self.answer not in ("json", "text"):
            raise DatasetError(f"enrich: answer must be 'json' or 'text', got {self.answer!r}")
        if self.answer == "json" and not self.fields:
            raise DatasetError("enrich: name the answer fields to add (--fields difficulty,rationale)")
        if self.answer == "text" and not self.fields:
            self.fields = ["enrich_text"]
        # Checked here, so the library, pipeline files and the CLI share one rule and one message.
        for name, least in (("concurrency", 1), ("max_retries", 0), ("parse_retries", 0)):
            _check_count(name, getattr(self, name), least)
        if self.max_tokens is not None:
            _check_count("max_tokens", self.max_tokens, 1)
        _check_seconds("timeout", self.timeout, zero_ok=False)
        _check_seconds("backoff", self.backoff, zero_ok=True)
        _check_seconds("max_backoff", self.max_backoff, zero_ok=True)
        _template_fields(self.prompt)  # a malformed template fails now, not on the first record


def _option(name: str) -> str:
    return f"{name} (--{name.replace('_', '-')})"


def _check_count(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise DatasetError(f"enrich: {_option(name)} must be a whole number >= {least}, got {value!r}")


def _check_seconds(name: str, value: Any, *, zero_ok: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    # NaN fails every comparison, and an infinite wait never ends: both are rejected with negatives.
    if not ok or value < 0 or (value == 0 and not zero_ok):
        rule = ">= 0" if zero_ok else "> 0"
        raise DatasetError(
            f"enrich: {_option(name)} must be a finite number of seconds {rule}, got {value!r}"
        )


# ------------------------------------------------------------------------------------------------ prompt


def _template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise DatasetError(
            f"enrich: prompt template is not a valid format string ({e}); write '{{{{' for a brace"
        ) from None


def task_text(rec: Rec, encoder: str = "minimal") -> str:
    """An ARC task as plain text: numbered examples, then the test inputs."""
    from arcscope.tasks.encoding import get_encoder

    enc = get_encoder(encoder)
    task = rec.task()
    parts = []
    for i, p in enumerate(task.train, 1):
        parts.append(f"Example {i}\nInput:\n{enc.encode(p.input)}\nOutput:\n{enc.encode(p.output)}")
    for i, p in enumerate(task.test, 1):
        parts.append(f"Test {i}\nInput:\n{enc.encode(p.input)}")
    return "\n\n".join(parts)


def render_prompt(rec: Rec, template: str, encoder: str = "minimal") -> str:
    """Fill a prompt template from one record; DatasetError naming the record and the missing field."""
    out = []
    for literal, name, spec, conv in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        if name == "record":
            value: Any = dumps(rec.data)
        elif name == "task":
            value = task_text(rec, encoder)
        elif name == "item":
            value = task_text(rec, encoder) if rec.is_task else dumps(rec.data)
        else:
            try:
                value = get_field(rec.data, name, rec.where)
            except DatasetError as e:
                raise DatasetError(f"{e} (needed by the prompt template)") from None
        if conv == "r":
            value = repr(value)
        if not isinstance(value, str) and not spec:
            value = dumps(value) if isinstance(value, (dict, list)) else str(value)
        out.append(format(value, spec or ""))
    return "".join(out)


# ------------------------------------------------------------------------------------------------ answer

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_answer(
    text: str, fields: list[str], choices: dict[str, list[str]], mode: str = "json"
) -> dict[str, Any]:
    """The answer fields from a reply; ValueError saying why the reply does not parse."""
    if mode == "text":
        if not text.strip():
            raise ValueError("empty reply")
        return {fields[0]: text.strip()}
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    a, b = text.find("{"), text.rfind("}")
    if 0 <= a < b:
        candidates.append(text[a : b + 1])
    obj = None
    for c in candidates:
        try:
            v = json.loads(c.strip())
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(v, dict):
            obj = v
            break
    if obj is None:
        raise ValueError("no JSON object in the reply")
    out = {}
    for f in fields:
        if f not in obj:
            raise ValueError(f"the reply's JSON has no field {f!r} (it has {sorted(obj)})")
        v = obj[f]
        allowed = choices.get(f)
        if allowed:
            match = next((c for c in allowed if isinstance(v, str) and v.strip().lower() == c.lower()), None)
            if match is None:
                raise ValueError(f"field {f!r} is {v!r}, not one of {allowed}")
            v = match
        out[f] = v
    return out


# ------------------------------------------------------------------------------------------------ client


MASK = "***"
"""What every secret is replaced by, wherever it would be written."""

_PUBLIC_PARAMS = frozenset({"api-version", "api_version", "version", "format", "alt"})
"""Query parameters of a base URL that are settings, not credentials; every other value is masked."""

_MIN_QUERY_SECRET = 6
"""Query values shorter than this are masked in the URL but not searched for in text (too common to scrub)."""


class Redactor:
    """The one redaction of ``enrich``: every secret becomes ``***`` in text and in nested values (keys too).

    Everything the step writes (records, report, cache, error messages) passes through one instance, made
    from the API key and the credentials in the base URL, in their plain, URL-quoted and JSON-escaped forms.
    """

    def __init__(self, secrets: list[str | None] | tuple[str | None, ...] = ()):
        forms: set[str] = set()
        for s in secrets:
            if s:
                forms |= {s, urllib.parse.quote(s, safe=""), urllib.parse.quote_plus(s)}
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted(forms, key=len, reverse=True)
        # A string holding a secret holds its JSON-escaped form once encoded: one fast scan of dumps().
        self._json_forms = sorted({json.dumps(f, ensure_ascii=False)[1:-1] for f in forms}, key=len)

    def text(self, text: str) -> str:
        """``text`` with every secret replaced."""
        for s in self.secrets:
            if s in text:
                text = text.replace(s, MASK)
        return text

    def __call__(self, value: Any) -> Any:
        """``value`` (text, or JSON-like nested dicts and lists) with every secret replaced; unchanged if clean."""
        if not self.secrets or value is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (dict, list, tuple, bytes)):
            blob = dumps(value)
            if not any(f in blob for f in self._json_forms):
                return value  # the common case: one C-speed encode instead of a walk in Python
            return self._walk(value)
        return value

    def _walk(self, v: Any) -> Any:
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            return {(self.text(k) if isinstance(k, str) else k): self._walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [self._walk(x) for x in v]
        if isinstance(v, bytes):
            return self.text(v.decode("utf-8", "replace"))
        return v


def endpoint_url(url: str) -> tuple[str, list[str]]:
    """``url`` as it may be recorded (password and credential-like query values masked) and the secrets in it."""
    u = urllib.parse.urlsplit(url.strip())
    secrets: list[str] = []
    netloc = u.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"  # an IPv6 literal
    try:
        port = u.port
    except ValueError:
        port = None
    if port is not None:
        netloc += f":{port}"
    if u.username is not None or u.password is not None:
        if u.password:
            secrets += [u.password, urllib.parse.unquote(u.password)]
            netloc = f"{u.username}:{MASK}@{netloc}"
        else:  # a bare token as the user name (https://TOKEN@host)
            secrets += [u.username or "", urllib.parse.unquote(u.username or "")]
            netloc = f"{MASK}@{netloc}"
    query = []
    for name, value in urllib.parse.parse_qsl(u.query, keep_blank_values=True):
        if name.lower() in _PUBLIC_PARAMS or not value:
            query.append((name, value))
            continue
        query.append((name, MASK))
        if len(value) >= _MIN_QUERY_SECRET:
            secrets.append(value)
    shown = urllib.parse.urlunsplit((u.scheme, netloc, u.path, urllib.parse.urlencode(query, safe="*"), ""))
    return shown, [s for s in secrets if s]


class _Fatal(Exception):
    pass


class _Malformed(Exception):
    pass


class _RecordFailure(Exception):
    pass


class ChatClient:
    """A minimal OpenAI chat-completions client over http.client: one keep-alive connection per thread."""

    def __init__(
        self, base_url: str, api_key: str | None, timeout: float, api_key_env: str = "OPENAI_API_KEY"
    ):
        u = urllib.parse.urlsplit(base_url.strip())
        try:
            _ = u.port  # parsed lazily: a bad port raises only when asked for
        except ValueError:
            u = u._replace(scheme="")  # an unusable port: reported below like any other bad URL
        if u.scheme not in ("http", "https") or not u.hostname:
            # The URL itself is not repeated: it may hold a credential.
            raise EnrichError(
                f"enrich: base URL (scheme {u.scheme or 'none'!r}, host {u.hostname or 'none'!r}) is not an "
                "http(s) URL with a host and a valid port; pass e.g. --base-url http://127.0.0.1:8000/v1"
            )
        # The route goes on the path, before any query (?key=... stays a query of the full URL).
        path = u.path.rstrip("/")
        if not path.endswith("/chat/completions"):
            path += "/chat/completions"
        full = urllib.parse.urlunsplit((u.scheme, u.netloc, path, u.query, ""))
        self.url, url_secrets = endpoint_url(full)
        """The endpoint as it is shown and recorded (credentials masked); also part of the cache key."""
        self._scheme, self._host, self._port = u.scheme, u.hostname, u.port
        self._path = path + (f"?{u.query}" if u.query else "")
        self._key = api_key
        self._basic: str | None = None
        if not api_key and (u.username or u.password):
            # Credentials in the URL are sent the way curl sends them, when no key is set.
            cred = f"{urllib.parse.unquote(u.username or '')}:{urllib.parse.unquote(u.password or '')}"
            self._basic = base64.b64encode(cred.encode()).decode()
            url_secrets.append(self._basic)
        self.key_env = api_key_env
        self.timeout = timeout
        self._local = threading.local()
        self.redact = Redactor([api_key, *url_secrets])
        """The redaction every text this step writes goes through."""

    def __repr__(self) -> str:
        return f"ChatClient({self.url!r})"

    def _conn(self) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            c = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = c
        return c

    def _drop(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
        self._local.conn = None

    def post(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        """One POST; returns (status, headers, body bytes). Network errors propagate."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        elif self._basic:
            headers["Authorization"] = f"Basic {self._basic}"
        data = json.dumps(body).encode()
        conn = self._conn()
        try:
            conn.request("POST", self._path, data, headers)
            resp = conn.getresponse()
            payload = resp.read()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
            if resp.will_close:
                self._drop()
            return resp.status, hdrs, payload
        except BaseException:
            self._drop()
            raise


@dataclass
class _Counters:
    requests: int = 0
    retries: int = 0
    parse_retries: int = 0
    cache_hits: int = 0
    ok: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **kw: int) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def to_json(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k != "lock"}


class ReplyCache:
    """Parsed-reply cache in SQLite: key -> reply text and token usage; safe across threads and kills."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, reply TEXT, usage TEXT, created REAL)"
            )
        except sqlite3.DatabaseError as e:
            raise DatasetError(
                f"enrich cache {self.path}: cannot open it as SQLite ({e}); delete it or pass another --cache"
            ) from None

    def get(self, key: str) -> tuple[str, dict[str, Any]] | None:
        """The cached reply and usage for ``key``, or None."""
        with self._lock:
            row = self._db.execute("SELECT reply, usage FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else (row[0], json.loads(row[1] or "{}"))

    def put(self, key: str, model: str, reply: str, usage: dict[str, Any]) -> None:
        """Store a reply (committed at once, so a kill right after loses nothing)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?)",
                (key, model, reply, json.dumps(usage), time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


class _NoCache:
    def get(self, key: str) -> None:
        return None

    def put(self, *a: Any) -> None:
        pass

    def close(self) -> None:
        pass


def default_cache_path() -> Path:
    """The shared enrich cache: ARCSCOPE_CACHE (or ~/.cache/arcscope)/enrich/replies.sqlite."""
    from arcscope.models.loading import cache_dir

    return cache_dir() / "enrich" / "replies.sqlite"


@dataclass
class _Result:
    reply: str | None
    fields: dict[str, Any] | None
    error: str | None
    cached: bool = False


class _Worker:
    """Sends one record's request with retries and parse retries (runs on a pool thread)."""

    def __init__(
        self, cfg: EnrichConfig, client: ChatClient, cache: Any, counters: _Counters, stop: threading.Event
    ):
        self.cfg, self.client, self.cache, self.c, self.stop = cfg, client, cache, counters, stop

    def body(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        b: dict[str, Any] = {"model": self.cfg.model, "messages": messages}
        if self.cfg.temperature is not None:
            b["temperature"] = self.cfg.temperature
        if self.cfg.max_tokens is not None:
            b["max_tokens"] = self.cfg.max_tokens
        b.update(self.cfg.extra_body)
        return b

    def _sleep(self, attempt: int, idx: int, retry_after: str | None) -> None:
        delay = min(self.cfg.max_backoff, self.cfg.backoff * (2**attempt))
        delay *= 0.5 + random.Random(f"{self.cfg.seed}:{idx}:{attempt}").random()
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), self.cfg.max_backoff))
            except ValueError:
                pass
        if self.stop.wait(delay):
            raise _Fatal("stopped")

    def _once(self, body: dict[str, Any], idx: int) -> tuple[str, dict[str, Any]]:
        """One request with transport retries; returns (reply text, usage)."""
        redact = self.client.redact
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            if self.stop.is_set():
                raise _Fatal("stopped")
            if attempt:
                self.c.add(retries=1)
            self.c.add(requests=1)
            retry_after = None
            try:
                status, headers, payload = self.client.post(body)
            except ConnectionRefusedError:
                last = f"connection refused by {self.client.url}"
                if attempt == self.cfg.max_retries:
                    raise _Fatal(
                        f"cannot reach {self.client.url}: connection refused; is the server running, and is --base-url right?"
                    ) from None
                self._sleep(attempt, idx, None)
                continue
            except socket.gaierror as e:
                raise _Fatal(
                    f"cannot reach {self.client.url}: the host name does not resolve ({e.strerror})"
                ) from None
            except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                if isinstance(e, TimeoutError):
                    last = f"no response within {self.cfg.timeout:g} s"
                self._sleep(attempt, idx, None)
                continue
            # Redacted before it is cut short, so no part of a secret survives the cut.
            text = redact(payload.decode("utf-8", "replace"))[:300]
            if status in (401, 403):
                env = self.client.key_env
                have = "is set" if self.client._key else "is not set"
                raise _Fatal(
                    f"{self.client.url} rejected the request with HTTP {status} ({text.strip()[:200]}); check the API key in ${env} (it {have})"
                )
            if status == 404:
                raise _Fatal(
                    f"{self.client.url} answered HTTP 404 ({text.strip()[:200]}); check --base-url and --model {self.cfg.model!r}"
                )
            if status in RETRY_STATUS or status >= 500:
                last = f"HTTP {status}: {text.strip()[:200]}"
                retry_after = headers.get("retry-after")
                self._sleep(attempt, idx, retry_after)
                continue
            if status != 200:
                raise _RecordFailure(f"HTTP {status}: {text.strip()[:300]}")
            try:
                obj = json.loads(payload)
                reply = obj["choices"][0]["message"]["content"]
                if not isinstance(reply, str):
                    raise TypeError("content is not text")
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as e:
                raise _Malformed(
                    f"malformed response body ({type(e).__name__}): {text.strip()[:200]!r}"
                ) from None
            usage = obj.get("usage") or {}
            usage = {
                k: int(usage.get(k) or 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")
            }
            self.c.add(**usage)
            return reply, usage
        raise _RecordFailure(f"gave up after {self.cfg.max_retries + 1} attempts; last: {last}")

    def __call__(self, idx: int, key: str, messages: list[dict[str, str]]) -> _Result:
        body = self.body(messages)
        cfg = self.cfg
        why = ""
        reply: str | None = None
        for p in range(cfg.parse_retries + 1):
            if p:
                self.c.add(parse_retries=1)
            try:
                reply, usage = self._once(body, idx)
            except _Malformed as e:
                why = str(e)
                continue
            except _RecordFailure as e:
                return _Result(None, None, str(e))
            try:
                parsed = parse_answer(reply, cfg.fields, cfg.choices, cfg.answer)  # type: ignore[arg-type]
            except ValueError as e:
                why = f"the reply does not parse: {e}"
                continue
            self.cache.put(key, cfg.model, self.client.redact(reply), usage)
            return _Result(reply, parsed, None)
        return _Result(reply, None, f"{why} (after {cfg.parse_retries + 1} tries)")


def request_key(model: str, body: dict[str, Any], rec: Rec, endpoint: str) -> str:
    """Cache key: sha256 of the endpoint (credentials masked), the model, the request and the record hash."""
    # The endpoint is in the key: another server with the same model name is another model.
    text = json.dumps(
        {"endpoint": endpoint, "model": model, "request": body, "record": record_hash(rec.data)},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def enrich(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: EnrichConfig | dict[str, Any] | None = None,
    *,
    on_error: OnError = "raise",
    limit: int | None = None,
    progress: ProgressFn | None = None,
    **options: Any,
) -> StepReport:
    """Ask the model about every record (the first ``limit`` for a trial) and add the parsed answer fields."""
    cfg = make_config(EnrichConfig, config, options)
    key = os.environ.get(cfg.api_key_env) or None
    client = ChatClient(cfg.base_url, key, cfg.timeout, cfg.api_key_env)
    redact = client.redact
    cache: Any
    if cfg.cache is None:
        cache = _NoCache()
    else:
        cache = ReplyCache(default_cache_path() if cfg.cache == "default" else cfg.cache)
    src, dst = os.fspath(source), os.fspath(out)
    report = StepReport("enrich", src, dst, config_dict(cfg))
    report.config["base_url"] = endpoint_url(cfg.base_url)[0]
    report.config["endpoint"] = client.url
    failures: list[str] = []
    skipped: Skipped = []
    ticker = Ticker(progress, "enrich", every=max(1, cfg.concurrency))
    counters = _Counters()
    stop = threading.Event()
    worker = _Worker(cfg, client, cache, counters, stop)
    window: deque[tuple[Rec, Future[_Result] | _Result]] = deque()
    pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="enrich")
    error_field = (
        cfg.status_field.replace("status", "error")
        if "status" in cfg.status_field
        else cfg.status_field + "_error"
    )

    def emit(rec: Rec, res: _Result, w: RecordWriter) -> None:
        for f in cfg.fields:  # type: ignore[union-attr]
            rec.set(f, None if res.fields is None else res.fields.get(f))
        if cfg.raw_field:
            rec.set(cfg.raw_field, res.reply)
        rec.set(cfg.status_field, "ok" if res.error is None else "failed")
        rec.set(error_field, res.error)
        counters.add(**({"ok": 1} if res.error is None else {"failed": 1}))
        if res.error is not None and not failures:
            failures.append(f"{rec.where}: {res.error}")
        # The whole record, nested values included: a reply may echo a secret anywhere in its JSON.
        rec.data = redact(rec.data)
        w.write(rec)
        report.records_out += 1
        ticker.tick()

    def drain(w: RecordWriter, keep: int) -> None:
        while len(window) > keep:
            rec, fut = window.popleft()
            try:
                res = fut.result() if isinstance(fut, Future) else fut
            except _Fatal as e:
                raise EnrichError(redact(f"enrich stopped at {rec.where}: {e}")) from None
            emit(rec, res, w)

    try:
        with RecordWriter(dst) as w:
            for idx, rec in enumerate(read_records(src, on_error, skipped, limit=limit)):
                report.records_in += 1
                try:
                    messages = ([{"role": "system", "content": cfg.system}] if cfg.system else []) + [
                        {"role": "user", "content": render_prompt(rec, cfg.prompt, cfg.encoder)}  # type: ignore[arg-type]
                    ]
                except DatasetError as e:
                    _fail_or_skip(e, on_error, skipped)
                    continue
                body = worker.body(messages)
                k = request_key(cfg.model, body, rec, client.url)
                hit = cache.get(k)
                if hit is not None:
                    try:
                        parsed = parse_answer(hit[0], cfg.fields, cfg.choices, cfg.answer)  # type: ignore[arg-type]
                        counters.add(cache_hits=1)
                        window.append((rec, _Result(hit[0], parsed, None, cached=True)))
                    except ValueError:
                        hit = None  # parsed under other settings; ask again
                if hit is None:
                    window.append((rec, pool.submit(worker, idx, k, messages)))
                # Emit in input order; a bounded window keeps memory flat and all workers busy.
                drain(w, 4 * cfg.concurrency)
            drain(w, 0)
    except BaseException as e:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        cache.close()
        if isinstance(e, ArcscopeError):
            # Errors from lower layers may quote a record or a reply: the CLI prints this text.
            e.args = tuple(redact(a) for a in e.args)
        raise
    pool.shutdown(wait=True)
    cache.close()
    report.figures = counters.to_json()
    report.figures["cache"] = None if cfg.cache is None else str(cache.path)
    for name in ("input", "output", "config", "figures"):
        setattr(report, name, redact(getattr(report, name)))
    skipped[:] = [(redact(where), redact(why)) for where, why in skipped]
    report = _finish(report, skipped, ticker, dst)
    if counters.failed and not counters.ok:
        # Nothing usable came back: a run that "succeeds" here would hide a broken endpoint or prompt.
        raise EnrichError(
            redact(
                f"enrich: all {counters.failed} record(s) failed (first: {failures[0]}); the reasons are in "
                f"the {error_field!r} field of {dst} and its report; check --base-url, --model and the "
                "prompt, then run again (failed records are not cached)"
            )
        )
    return report


__all__ = [
    "PRESETS",
    "ChatClient",
    "EnrichConfig",
    "EnrichError",
    "Redactor",
    "ReplyCache",
    "endpoint_url",
    "enrich",
    "parse_answer",
    "render_prompt",
    "task_text",
]
