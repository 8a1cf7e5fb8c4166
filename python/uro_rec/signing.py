"""Signed model versions: only holders of the model key can ship a model to a port.

Why: a saved version is code. LibRecommender's ``DataInfo.load`` unpickles (``pickle.load``,
``np.load(allow_pickle=True)``) and TF/torch checkpoints are not safer, so whoever can write
a version's files runs code in every port that loads it. The registry's sha256 sits in the
same database as the files and proves nothing against someone who can write that database.

How: a version directory carries ``uro_sig.json``, a manifest naming the model, its version,
the sha256 of every other file in the directory, and the id of the key that signed it, plus
an HMAC-SHA256 of that manifest under the key. The key is shared by the trainers and the
servers and is read from the environment or a file (never from the database):

- ``URO_REC_MODEL_KEY_FILE`` (the port's ``--model-key-file``): keys separated by white
  space or line breaks, ``#`` comment lines allowed; else ``URO_REC_MODEL_KEY``: the same,
  in the variable itself. The first key signs; every key listed verifies (rotation: list
  the new key after the old one everywhere, then first, then drop the old one).
- ``URO_REC_ALLOW_UNSIGNED_MODELS=1`` (``--allow-unsigned-models``) lets versions without a
  signature load (a warning is logged). A version whose signature is wrong, or made with a
  key that is not listed, is refused all the same.

The policy (docs/OPERATIONS.md, "Who may ship a model"):

- ``save`` signs every version when a key is configured (the manifest is written before the
  version's directory is renamed into place).
- ``load`` from the model directory verifies every version when a key is configured, before a
  byte of it is read; without a key the model directory is trusted as it is.
- ``publish`` needs a key and a valid signature (or, without a key, the explicit allowance).
- ``load from => database`` needs a key (or the allowance); the fetched files are verified
  before they are renamed into the model directory, and again by ``load``.

Refusals are ``{error, {untrusted_model, Message}}``.
"""
import hashlib
import hmac
import json
import os

from .errors import PortError
from .port import log

SIG_FILE = "uro_sig.json"
FORMAT = 1
_DOMAIN = b"uro_rec model signature 1\n"
_MIN_KEY = 32
_MAX_MANIFEST = 8 << 20  # a manifest names a few dozen files; anything larger is not one
_BLOCK = 1 << 20


class Untrusted(PortError):
    """A version that may not be loaded or published: ``{error, {untrusted_model, Msg}}``."""

    kind = "untrusted_model"

    def __init__(self, message):
        super().__init__(str(message))


class Keys:
    """The configured keys: ``signing`` (bytes or None), ``by_id`` (id -> key) and
    ``allow_unsigned``; ``error`` says why the configuration is unusable (then nothing is
    signed or verified: every operation that needs it is refused)."""

    def __init__(self, keys=(), allow_unsigned=False, error=None, source=None):
        self.signing = keys[0] if keys else None
        self.by_id = {key_id(k): k for k in keys}
        self.allow_unsigned = allow_unsigned
        self.error = error
        self.source = source


def key_id(key):
    """A key's public name: 16 hex digits of a hash of it (says which key signed, not what
    it is)."""
    return hashlib.sha256(b"uro_rec model key id\n" + key).hexdigest()[:16]


def _parse_keys(text, source):
    tokens = [t for line in text.splitlines() if not line.lstrip().startswith("#")
              for t in line.split()]
    if not tokens:
        return Keys(error=f"{source} holds no key")
    short = [i + 1 for i, t in enumerate(tokens) if len(t) < _MIN_KEY]
    if short:
        return Keys(error=f"{source}: key {short[0]} is shorter than {_MIN_KEY} characters "
                          f"(make one with: openssl rand -hex 32)")
    return Keys([t.encode() for t in tokens], source=source)


def keys():
    """The key configuration, read from the environment (and the key file) on every use:
    the port's flags set the same variables (c_src/main.c)."""
    allow = os.environ.get("URO_REC_ALLOW_UNSIGNED_MODELS", "").strip().lower() in (
        "1", "true", "yes")
    path = os.environ.get("URO_REC_MODEL_KEY_FILE", "")
    if path:
        source = f"the model key file {path}"
        try:
            with open(path, "rb") as f:
                data = f.read(1 << 16)
            k = _parse_keys(data.decode("utf-8"), source)
        except (OSError, UnicodeDecodeError) as e:
            k = Keys(error=f"{source} cannot be read: "
                           f"{os.strerror(e.errno) if getattr(e, 'errno', None) else 'not UTF-8'}")
    elif os.environ.get("URO_REC_MODEL_KEY", "").strip():
        k = _parse_keys(os.environ["URO_REC_MODEL_KEY"], "URO_REC_MODEL_KEY")
    else:
        k = Keys()
    k.allow_unsigned = allow
    return k


_NO_KEY = "no model key is configured (URO_REC_MODEL_KEY or URO_REC_MODEL_KEY_FILE)"


def _configured(what):
    k = keys()
    if k.error:
        raise Untrusted(f"{what}: {k.error}")
    return k


# ---- the manifest ----------------------------------------------------------------------------

def files_of(directory):
    """(relative path, full path) of every file under ``directory``, in path order."""
    out = []
    for root, _dirs, files in os.walk(directory):
        for f in files:
            full = os.path.join(root, f)
            out.append((os.path.relpath(full, directory), full))
    return sorted(out)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def _hashes(directory):
    return {rel: _sha256(full) for rel, full in files_of(directory) if rel != SIG_FILE}


def _mac(key, manifest):
    body = {k: v for k, v in manifest.items() if k != "hmac"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, _DOMAIN + text.encode(), hashlib.sha256).hexdigest()


def sign(directory, name, version):
    """Writes the signature of ``directory`` as ``name`` version ``version`` when a key is
    configured; returns the key id, or None (no key: the version stays unsigned)."""
    k = _configured(f"save: {name} version {version}")
    if k.signing is None:
        return None
    manifest = {"format": FORMAT, "name": name, "version": version,
                "key_id": key_id(k.signing), "files": _hashes(directory)}
    manifest["hmac"] = _mac(k.signing, manifest)
    with open(os.path.join(directory, SIG_FILE), "w", encoding="utf-8") as f:
        json.dump(manifest, f, sort_keys=True)
    return manifest["key_id"]


def _read_manifest(path, what):
    try:
        if os.path.getsize(path) > _MAX_MANIFEST:
            raise ValueError("too large")
        with open(path, "rb") as f:
            m = json.loads(f.read().decode("utf-8"))
        if not (isinstance(m, dict) and m.get("format") == FORMAT and
                isinstance(m.get("files"), dict) and isinstance(m.get("hmac"), str) and
                isinstance(m.get("key_id"), str)):
            raise ValueError("not a manifest")
    except (OSError, ValueError) as e:
        raise Untrusted(f"{what}: {SIG_FILE} is not a readable signature ({e})") from None
    return m


def _verify(directory, m, k, what, name, version):
    key = k.by_id.get(m["key_id"])
    if key is None:
        raise Untrusted(f"{what}: signed with key {m['key_id'][:16]!r}, which is not among "
                        f"the verification keys ({', '.join(sorted(k.by_id))}) of {k.source}")
    if not hmac.compare_digest(_mac(key, m), m["hmac"]):
        raise Untrusted(f"{what}: the signature does not match its manifest (altered, or "
                        f"made with another key)")
    if name is not None and (m.get("name"), m.get("version")) != (name, version):
        raise Untrusted(f"{what}: signed as {str(m.get('name'))[:128]!r} version "
                        f"{str(m.get('version'))[:20]}, not as this version")
    signed, found = m["files"], _hashes(directory)
    for rel in sorted(set(signed) | set(found)):
        if rel not in found:
            raise Untrusted(f"{what}: {rel[:200]!r} is signed but missing")
        if rel not in signed:
            raise Untrusted(f"{what}: {rel[:200]!r} is not in the signed manifest")
        if not hmac.compare_digest(str(signed[rel]), found[rel]):
            raise Untrusted(f"{what}: {rel[:200]!r} does not match its signed sha256")


def check(directory, what, name=None, version=None, origin="disk"):
    """Raises Untrusted unless the version in ``directory`` may be loaded (``origin`` disk
    or database) or published (``origin`` publish), by the policy of the module doc.
    ``name`` and ``version``, when given, must be what the version was signed as. Reads the
    files to hash them; never unpickles or parses anything but the manifest."""
    k = _configured(what)
    if not k.by_id and origin == "disk":
        return  # no key: the model directory is trusted as it is (docs/OPERATIONS.md)
    sig = os.path.join(directory, SIG_FILE)
    if os.path.isfile(sig) and k.by_id:
        _verify(directory, _read_manifest(sig, what), k, what, name, version)
        return
    if origin == "publish" and k.by_id:
        raise Untrusted(f"{what}: the version was saved unsigned; {{save, {name}}} saves a "
                        f"signed one")
    if not k.allow_unsigned:
        if k.by_id:
            raise Untrusted(f"{what}: not signed (no {SIG_FILE}); save it again where the "
                            f"model key is set, or allow unsigned models "
                            f"(URO_REC_ALLOW_UNSIGNED_MODELS=1)")
        which = "to publish" if origin == "publish" else "from the database"
        raise Untrusted(f"{what}: {_NO_KEY}; a version {which} must be signed")
    if origin != "publish":
        log("warning", f"{what}: loaded without a verified signature (unsigned models are "
                       f"allowed)")


def check_fetchable(what):
    """``load from => database`` needs a key, or the explicit allowance of unsigned models:
    refused before anything is downloaded."""
    k = _configured(what)
    if not k.by_id and not k.allow_unsigned:
        raise Untrusted(f"{what}: {_NO_KEY} to verify versions from the database")
