"""The limits of docs/api.md, "Validation and errors": the server refuses beyond them,
and a client checks the ones it can before it sends (both read them here)."""

from __future__ import annotations

import re

USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
PASSWORD_MIN_BYTES = 8
PASSWORD_MAX_BYTES = 1024
BODY_MAX_BYTES = 65_536
PATTERN_MAX_CHARS = 256
REQUEST_ID_MAX_CHARS = 128
READ_LIMIT_DEFAULT = 10
READ_LIMIT_MAX = 1000
PAGE_SIZE_DEFAULT = 100
PAGE_SIZE_MAX = 1000
IDS_MAX = 10_000
HISTORY_LIMIT_DEFAULT = 50
HISTORY_LIMIT_MAX = 1000
CLIENT_LABEL_MAX_CHARS = 64
SESSION_ID_RE = re.compile(r"[0-9a-f]{32}")
READ_REPLY_MAX_BYTES = 3 << 20
"""Bodies one ReadMessages reply carries at most: under the client's default 4 MiB receive
limit, and what a Session stream reserves for the reply before the call starts."""
