"""``tlswatch backup DEST`` and ``tlswatch restore SRC``.

A backup is a folder: ``tlswatch.duckdb`` (a consistent copy of the database, made under a
read lock that holds off the loader for the copy's length only), ``policies/`` (the hosted
MTA-STS policies), ``state/`` (the files that remember what was done: the daily exports'
state, the IMAP fetch state) and ``manifest.json`` (tlswatch version, migrations, row counts,
the size and sha256 of every file).  It is written to ``DEST.partial`` and renamed when
whole, so a DEST that exists is a complete backup.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tlswatch import __version__
from tlswatch.config import Settings
from tlswatch.dburl import DatabaseUrl, is_url, location
from tlswatch.durable import fsync_path
from tlswatch.errors import StoreError, StoreLockedError, TlsWatchError
from tlswatch.jobs import STATE as EXPORT_STATE
from tlswatch.store import Store, exists, now_utc
from tlswatch.store.maintenance import COUNTED_TABLES, copy_into, no_serve, same_owner
from tlswatch.store.migrations import MIGRATIONS

MANIFEST = "manifest.json"
DATABASE = "tlswatch.duckdb"
FORMAT = 1


class BackupError(TlsWatchError):
    """A backup cannot be made, or a backup folder cannot be restored."""


def state_files(settings: Settings) -> dict[str, Path]:
    """The state files worth keeping, by name in the backup: where each lives now."""
    found = {"export-state.json": Path(settings.export_dir) / EXPORT_STATE
             if settings.export_dir else None,
             "imap-state.json": Path(settings.spool) / "imap-state.json"}
    return {name: path for name, path in found.items() if path is not None}


@dataclass
class Done:
    """What a backup wrote or a restore put back: the folder and its manifest."""

    folder: Path | DatabaseUrl
    manifest: dict[str, Any]
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"to": str(self.folder), **self.manifest, "notes": self.notes}


def backup(settings: Settings, dest: Path) -> Done:
    """Copy the database (consistently), the hosted policies and the state files to DEST."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest}: exists and is not an empty folder; give a new one")
    if not exists(settings.db):
        raise BackupError(f"{settings.db}: no database here to back up")
    work = dest.with_name(f"{dest.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    try:
        work.mkdir(parents=True)
    except OSError as exc:  # as the tlswatch user, /var/backups is root's
        raise BackupError(f"{dest}: cannot write the backup there: {exc.strerror or exc}; give "
                          "a folder the user running tlswatch may write (e.g. install -d -o "
                          "tlswatch -g tlswatch /var/backups/tlswatch)") from exc
    notes: list[str] = []
    try:
        with Store.open(settings.db, read_only=True, lock_timeout=settings.lock_timeout) as store:
            copy_into(store, work / DATABASE)
        policy_dir = Path(settings.policy_dir)
        if policy_dir.is_dir():
            for path in sorted(p for p in policy_dir.rglob("*") if p.is_file()):
                _copy(path, work / "policies" / path.relative_to(policy_dir))
        else:
            notes.append(f"no hosted policies: {policy_dir} does not exist")
        for name, path in state_files(settings).items():
            if path.is_file():
                _copy(path, work / "state" / name)
        manifest = {"format": FORMAT, "tlswatch_version": __version__,
                    "created_at": now_utc().isoformat() + "Z", "source_db": str(settings.db),
                    **_describe(work / DATABASE), "files": _inventory(work)}
        _write_json(work / MANIFEST, manifest)
        if dest.is_dir():
            dest.rmdir()
        os.replace(work, dest)
        fsync_path(dest.parent)
    except OSError as exc:  # a full disk: nothing half-written is left
        shutil.rmtree(work, ignore_errors=True)
        raise BackupError(f"{dest}: backup not written: {exc.strerror or exc} "
                          f"({exc.filename or dest}); nothing was left there") from exc
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Done(dest, manifest, notes)


def _describe(db: Path) -> dict[str, Any]:
    """The copy's migrations and row counts, read from the copy itself."""
    with Store.open(db, read_only=True) as store:
        migrations = [r["name"] for r in store.rows(
            "SELECT name FROM schema_migrations ORDER BY name")]
        present = {r["table_name"] for r in store.rows(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()")}
        counts = {t: int(store.rows(f"SELECT count(*) AS n FROM {t}")[0]["n"])
                  for t in COUNTED_TABLES if t in present}
    return {"migrations": migrations, "counts": counts}


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    with open(dest, "rb+") as fh:
        os.fsync(fh.fileno())


def _inventory(folder: Path) -> list[dict[str, Any]]:
    return [{"path": p.relative_to(folder).as_posix(), "size": p.stat().st_size,
             "sha256": _sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())



def check(src: Path) -> dict[str, Any]:
    """Read SRC's manifest and check every file against it; return the manifest."""
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{src}: no {MANIFEST}: not a tlswatch backup folder") from None
    except ValueError as exc:
        raise BackupError(f"{src / MANIFEST}: not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{src / MANIFEST}: backup format {manifest.get('format')!r}; this "
                          f"tlswatch reads format {FORMAT}")
    for entry in manifest.get("files", []):
        name = PurePosixPath(entry["path"])
        # Only the form a backup writes ("policies/a.json"): "policies//etc/x" would be
        # joined to policy_dir as the absolute "/etc/x".
        if name.is_absolute() or ".." in name.parts or str(name) != entry["path"] or not (
                str(name) == DATABASE or name.parts[0] in ("policies", "state")):
            raise BackupError(f"{src / MANIFEST}: file {entry['path']!r} is not a place a "
                              "backup writes to; refused")
        path = src / entry["path"]
        if any((src / PurePosixPath(*name.parts[:i])).is_symlink()
               for i in range(1, len(name.parts) + 1)):
            raise BackupError(f"{path}: is a symbolic link (or lies below one); a backup "
                              "holds plain files only; refused")
        if not path.is_file():
            raise BackupError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size != entry["size"] or _sha256(path) != entry["sha256"]:
            raise BackupError(f"{path}: does not match the manifest (size or sha256 differs): "
                              "the backup is damaged")
    if DATABASE not in {entry["path"] for entry in manifest.get("files", [])}:
        raise BackupError(f"{src / MANIFEST}: does not list {DATABASE}: the database would be "
                          "restored unchecked; refused")
    known = {name for name, _ in MIGRATIONS}
    unknown = [m for m in manifest.get("migrations", []) if m not in known]
    if unknown:
        raise BackupError(f"{src}: made by a newer tlswatch ({manifest.get('tlswatch_version')};"
                          f" migrations this version does not know: {', '.join(unknown)}); "
                          "restore it with that version")
    return manifest


def restore(settings: Settings, src: Path, *, force: bool = False) -> Done:
    """Put a backup back: the database, the policies and the state files, where the
    settings say.  Refuses while 'serve' runs on the database, and over a database that
    holds reports unless ``force``."""
    src = Path(src)
    manifest = check(src)
    if is_url(settings.db):
        return _restore_into_postgresql(settings, src, manifest)
    db = Path(settings.db)
    notes: list[str] = []
    with no_serve(db):
        if db.exists() and not force:
            _refuse_if_used(db, settings.lock_timeout)
        _put_database(src / DATABASE, db, lock_timeout=settings.lock_timeout)
        with Store.open(db, lock_timeout=settings.lock_timeout) as store:
            if store.applied:
                notes.append(f"applied migrations {', '.join(store.applied)}")
    notes += _restore_files(settings, src, manifest)
    return Done(db, manifest, notes)


def _restore_into_postgresql(settings: Settings, src: Path, manifest: dict[str, Any]) -> Done:
    """Copy the backup's database into an empty PostgreSQL database (``db copy``)."""
    from tlswatch.store.copy import copy_between

    target = location(settings.db)  # the URL itself (str() of it is the redacted text)
    try:
        copy_between(str(src / DATABASE), target, lock_timeout=settings.lock_timeout)
    except StoreError as exc:
        if "is not empty" not in str(exc):
            raise
        raise BackupError(f"{target}: restoring into PostgreSQL needs an empty "
                          "database (--force does not empty one): create a new database, or "
                          "drop and create this one, and restore again") from None
    return Done(target, manifest, _restore_files(settings, src, manifest))


def _restore_files(settings: Settings, src: Path, manifest: dict[str, Any]) -> list[str]:
    """Put back the hosted policies and the state files; notes on what was not."""
    notes: list[str] = []
    for entry in manifest["files"]:
        name = entry["path"]
        if name.startswith("policies/"):
            _copy(src / name, Path(settings.policy_dir) / name.removeprefix("policies/"))
    places = state_files(settings)
    for entry in manifest["files"]:
        name = entry["path"].removeprefix("state/")
        if entry["path"].startswith("state/"):
            if name in places:
                _copy(src / entry["path"], places[name])
            else:
                notes.append(f"{entry['path']} not restored: export_dir is not set")
    return notes


def _refuse_if_used(db: Path, lock_timeout: float) -> None:
    try:
        with Store.open(db, read_only=True, lock_timeout=lock_timeout,
                        pending_ok=True) as store:
            tables = {r["table_name"] for r in store.rows(
                "SELECT table_name FROM duckdb_tables()")}
            reports = int(store.rows("SELECT count(*) AS n FROM reports")[0]["n"]) \
                if "reports" in tables else 0
    except StoreError as exc:
        raise BackupError(f"{db}: a database is there that cannot be checked ({exc}); "
                          "give --force to replace it") from None
    if reports:
        raise BackupError(f"{db}: holds {reports:,} reports; restoring would replace them. "
                          "Give --force to replace it, or set another database (--db)")


def _put_database(copy: Path, db: Path, *, lock_timeout: float) -> None:
    """Copy the backup's database beside the target, fsync, then rename it into place while
    holding the old file's lock (so no writer is half-way through it)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(f".{db.name}.restore-{os.getpid()}")
    _copy(copy, tmp)
    try:
        with contextlib.ExitStack() as stack:
            if db.exists():
                try:
                    stack.enter_context(Store.open(db, read_only=True, pending_ok=True,
                                                   lock_timeout=lock_timeout))
                except StoreLockedError:
                    raise
                except StoreError:  # a damaged or newer file (--force): replace it
                    pass
            Path(f"{db}.wal").unlink(missing_ok=True)
            if db.exists():
                same_owner(tmp, like=db)
            os.replace(tmp, db)
            fsync_path(db.parent)
    finally:
        tmp.unlink(missing_ok=True)
