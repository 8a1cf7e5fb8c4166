"""The registry's database store: saved model versions in uro_rec_models and
uro_rec_model_chunks, so any port can load what another trained.

``publish`` copies a saved version's directory (see :mod:`uro_rec.registry` for its layout)
into the tables; ``fetch`` writes it back under the model directory and verifies it. A
version's checksum is sha256 over every file's relative path and bytes, in path order.
"""
import hashlib
import json
import os
import shutil
import tempfile

from . import db
from .errors import PortError, UnknownModel

CHUNK_BYTES = 1 << 20


def _files_of(directory):
    out = []
    for root, _dirs, files in os.walk(directory):
        for f in files:
            full = os.path.join(root, f)
            out.append((os.path.relpath(full, directory), full))
    return sorted(out)


def checksum(directory):
    """sha256 over every file's relative path and bytes, in path order."""
    h = hashlib.sha256()
    for rel, full in _files_of(directory):
        h.update(rel.encode() + b"\0")
        with open(full, "rb") as f:
            for block in iter(lambda: f.read(CHUNK_BYTES), b""):
                h.update(block)
    return h.hexdigest()


def _store_chunks(name, version, directory):
    """The files' bytes in chunks, in transactions of ~8 MiB. Returns the bytes stored."""
    total = 0
    pending, pending_bytes = [], 0
    insert = ("INSERT INTO uro_rec_model_chunks (name, version, path, chunk, data) "
              "VALUES ($1, $2, $3, $4, $5)")
    for rel, full in _files_of(directory):
        with open(full, "rb") as f:
            for i, block in enumerate(iter(lambda: f.read(CHUNK_BYTES), b"")):
                pending.append((insert, [name, version, rel, i, block]))
                pending_bytes += len(block)
                total += len(block)
                if pending_bytes >= 8 * CHUNK_BYTES:
                    db.transaction(pending)
                    pending, pending_bytes = [], 0
    if pending:
        db.transaction(pending)
    return total


def publish(entry):
    """Stores the saved version of ``entry``: chunks first, then the metadata row, so a
    reader never finds a version whose files are incomplete. Returns (checksum, bytes)."""
    name, version = entry.name, entry.version
    # Re-publishing a version: its metadata row goes with its old chunks, in one
    # transaction, so no reader ever sees metadata over half-replaced files.
    db.transaction([
        ("DELETE FROM uro_rec_models WHERE name = $1 AND version = $2", [name, version]),
        ("DELETE FROM uro_rec_model_chunks WHERE name = $1 AND version = $2", [name, version])])
    total = _store_chunks(name, version, entry.path)
    digest = checksum(entry.path)
    db.transaction([(
        "INSERT INTO uro_rec_models (name, version, algorithm, n_users, n_items, metrics, "
        "checksum, total_bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
        "ON CONFLICT (name, version) DO UPDATE SET algorithm = excluded.algorithm, "
        "n_users = excluded.n_users, n_items = excluded.n_items, metrics = excluded.metrics, "
        "checksum = excluded.checksum, total_bytes = excluded.total_bytes, created_at = now()",
        [name, version, entry.algorithm, entry.n_users, entry.n_items,
         json.dumps(entry.metrics or {}), digest, total])])
    return digest, total


def versions(name=None):
    """(name, version, algorithm, n_users, n_items, checksum, total_bytes) rows, of every
    model or of ``name``, in name and version order."""
    q = ("SELECT name, version, algorithm, n_users, n_items, checksum, total_bytes "
         "FROM uro_rec_models")
    r = db.execute(q + (" WHERE name = $1" if name else "") + " ORDER BY name, version",
                   [name] if name else [])
    return r["rows"]


def _write_chunks(name, version, tmp):
    r = db.execute("SELECT path, data FROM uro_rec_model_chunks WHERE name = $1 AND "
                   "version = $2 ORDER BY path, chunk", [name, version])
    for rel, data in r["rows"]:
        if os.path.isabs(rel) or ".." in rel.split(os.sep):
            raise PortError(f"registry: refusing path {rel!r}", kind="internal")
        dest = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "ab") as f:
            f.write(data)


def fetch(name, version, model_root):
    """Writes version ``version`` (None: the newest) of ``name`` under
    ``model_root/name/version`` and verifies its checksum. Returns (version, path)."""
    rows = [r for r in versions(name) if version is None or r[1] == version]
    if not rows:
        raise UnknownModel(name)
    _, version, _algo, _nu, _ni, digest, _total = rows[-1]
    final = os.path.join(model_root, name, str(version))
    if os.path.isdir(final) and checksum(final) == digest:
        return version, final
    # The temporary directory sits beside the final one: rename(2) cannot cross filesystems.
    os.makedirs(os.path.join(model_root, name), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".fetch-{version}-", dir=os.path.join(model_root, name))
    try:
        _write_chunks(name, version, tmp)
        got = checksum(tmp)
        if got != digest:
            raise PortError(f"registry: checksum mismatch for {name} version {version}: "
                            f"stored {digest}, fetched {got}", kind="internal")
        os.makedirs(os.path.dirname(final), exist_ok=True)
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
        return version, final
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
