"""One live sender per campaign: an flock next to the database."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

from newsletter.errors import DeliveryError


def lock_path(database: Path, campaign_id: int) -> Path:
    """The lock file that marks campaign `campaign_id` as being sent by a live process."""
    return database.with_name(f".{database.name}.campaign-{campaign_id}.lock")


class CampaignLock:
    """An exclusive, non-blocking flock: one live sender per campaign.

    The kernel releases it when the holder dies, so a held lock means a live
    process and a free one with status `sending` means an interrupted send.
    """

    def __init__(self, database: Path, campaign_id: int):
        self.path = lock_path(database, campaign_id)
        self.campaign_id = campaign_id
        self.fd: int | None = None

    def acquire(self) -> CampaignLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise DeliveryError(
                        f"campaign {self.campaign_id} is being sent right now by {holder}: wait "
                        "for it to finish (`newsletter campaigns` shows its progress)"
                    ) from None
                raise
            # The holder before us may have unlinked the file after we opened it:
            # only a lock on the file that is still at `path` counts.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        except OSError as exc:  # a full disk: one line, and the lock is let go
            self.release()
            raise DeliveryError(
                f"cannot write the lock file {self.path.name} in {self.path.parent} "
                f"({exc.strerror}): free some space there (or make it writable), then run "
                "the same command"
            ) from None
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # unlink while still holding it (see acquire)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> CampaignLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_being_sent(database: Path, campaign_id: int) -> bool:
    """True when a live process holds the campaign's lock."""
    path = lock_path(database, campaign_id)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
