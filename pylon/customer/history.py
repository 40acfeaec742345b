"""A local log of every ask (paid or free), like `llm logs`: PYLON_HOME/history.sqlite.

Why separate from the receipts ledger: receipts are money records (written before paying,
never rewritten); history is a convenience log of what was asked, of whom, how long it took
and what it cost, including free jobs and failures. Prompt and answer text are kept only
when the user turns `history.save_text` on; otherwise only sizes and metadata are stored.

The file is created with mode 0600 (prompts can be private) and written once per ask.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pylon.errors import StorageError
from pylon.home import private_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS asks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,             -- unix time the ask started
    job_id TEXT,
    status TEXT NOT NULL,         -- ok | error
    model TEXT,
    provider TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    msat INTEGER NOT NULL DEFAULT 0,
    fee_msat INTEGER NOT NULL DEFAULT 0,
    latency_s REAL,
    prompt_chars INTEGER,
    answer_chars INTEGER,
    error TEXT,
    prompt TEXT,                  -- only with history.save_text
    system TEXT,                  -- only with history.save_text
    answer TEXT                   -- only with history.save_text
);
CREATE INDEX IF NOT EXISTS asks_at ON asks(at);
"""


@dataclass
class HistoryEntry:
    """One ask as recorded."""

    at: float
    status: str
    job_id: str | None = None
    model: str | None = None
    provider: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    msat: int = 0
    fee_msat: int = 0
    latency_s: float | None = None
    prompt_chars: int | None = None
    answer_chars: int | None = None
    error: str | None = None
    prompt: str | None = None
    system: str | None = None
    answer: str | None = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = [f for f in HistoryEntry.__dataclass_fields__ if f != "id"]


class History:
    """The ask log; open with `History(path)`, close with `close()` (or a `with` block)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(private_file(path), timeout=10.0)  # 0600 before SQLite writes to it
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the ask history {path}: {exc}") from exc

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def record(self, entry: HistoryEntry, *, save_text: bool) -> int:
        """Append one ask; prompt/system/answer text is dropped unless `save_text`."""
        data = entry.to_dict()
        data.pop("id")
        if not save_text:
            data["prompt"] = data["system"] = data["answer"] = None
        try:
            with self._db:
                cur = self._db.execute(
                    f"INSERT INTO asks ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})",
                    [data[c] for c in _COLUMNS])
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write the ask history {self.path}: {exc}") from exc
        return int(cur.lastrowid or 0)

    def query(self, *, limit: int | None = 20, model: str | None = None, provider: str | None = None,
              since: float | None = None, status: str | None = None, paid: bool | None = None,
              search: str | None = None) -> list[HistoryEntry]:
        """Newest first, filtered; `provider` matches a hex pubkey prefix."""
        where: list[str] = []
        args: list[Any] = []
        if model:
            where.append("model = ?")
            args.append(model)
        if provider:
            where.append("provider LIKE ?")
            args.append(provider.lower() + "%")
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if status:
            where.append("status = ?")
            args.append(status)
        if paid is not None:
            where.append("msat > 0" if paid else "msat = 0")
        if search:
            where.append("(prompt LIKE ? OR answer LIKE ? OR system LIKE ?)")
            args += [f"%{search}%"] * 3
        sql = f"SELECT id, {', '.join(_COLUMNS)} FROM asks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        try:
            rows = self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the ask history {self.path}: {exc}") from exc
        return [HistoryEntry(id=row[0], **dict(zip(_COLUMNS, row[1:]))) for row in rows]


def now() -> float:
    return time.time()
