"""Reaching the Hugging Face hub only when it is needed, and failing fast when it can't be.

Local files must load with no network at all, and a machine without network
must hear so at once instead of after half a minute of retries. So every hub
load is tried first in offline mode (cache only); only if that misses do we
check, with one short TCP connect, that the hub can be reached at all.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from lenstop.models.errors import NotFoundError

T = TypeVar("T")


@contextmanager
def offline() -> Iterator[None]:
    """Forbid the hub for the duration: transformers and huggingface_hub read this flag per call."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """One TCP connect to the hub's host; False when there is no route or it times out."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _is_cache_miss(err: BaseException) -> bool:
    """True for the errors huggingface_hub and transformers raise when offline mode finds no file."""
    names = {type(e).__name__ for e in _chain(err)}
    text = " ".join(str(e) for e in _chain(err)).lower()
    return bool(
        names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled"}
        or "offline mode" in text
        or "local_files_only" in text
        or "cannot find the requested files in the local cache" in text
        or "couldn't connect" in text
    )


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def cached_snapshot(repo_id: str) -> Path | None:
    """The local cache's folder of a hub model (its snapshot of `main`), when its config.json is there."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # a name that is no repository id: the load says what is wrong with it
        return None
    return Path(found).parent if isinstance(found, str) else None


def cache_first(what: str, load: Callable[[], T]) -> T:
    """Run `load` from the local cache; go online only if the cache misses and the hub answers."""
    try:
        with offline():
            return load()
    except Exception as err:  # classified just below
        if not _is_cache_miss(err):
            raise
    if not hub_reachable():
        raise NotFoundError(
            f"{what} is not in the local Hugging Face cache and the hub cannot be reached "
            "(no network?); download it on a machine with network or pass a local directory"
        )
    return load()
