"""Signed model versions (uro_rec.signing): who may ship a model. The database side (a
tampered chunk or metadata row, publish and load from => database across two ports) is
test/db_test.escript's case 5b; here the manifest itself and the model directory."""
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from uro_rec import commands, registry, signing
from uro_rec.port import Atom

from conftest import str_rows, train_capturing
from uro_rec.signing import Untrusted

K1 = "1" * 64
K2 = "2" * 64
K3 = "3" * 64


@pytest.fixture
def keyed(monkeypatch):
    """A function that sets the key configuration of the environment."""
    def set_keys(keys=None, allow=False, key_file=None):
        for var in ("URO_REC_MODEL_KEY", "URO_REC_MODEL_KEY_FILE",
                    "URO_REC_ALLOW_UNSIGNED_MODELS"):
            monkeypatch.delenv(var, raising=False)
        if keys is not None:
            monkeypatch.setenv("URO_REC_MODEL_KEY", keys)
        if key_file is not None:
            monkeypatch.setenv("URO_REC_MODEL_KEY_FILE", str(key_file))
        if allow:
            monkeypatch.setenv("URO_REC_ALLOW_UNSIGNED_MODELS", "1")
    set_keys()
    return set_keys


@pytest.fixture
def saved(keyed):
    """Saves a loaded model as a new version signed with K1; the entry's own version and
    path are put back afterwards, and the new version removed."""
    made = []

    def save(name):
        keyed(K1)
        entry = registry.get(name)
        made.append((entry, entry.version, entry.path))
        return registry.save(entry)
    yield save
    for entry, version, path in made:
        shutil.rmtree(entry.path, ignore_errors=True)
        entry.version, entry.path = version, path


@pytest.fixture
def version(tmp_path):
    d = tmp_path / "m" / "3"
    (d / "sub").mkdir(parents=True)
    (d / "uro_meta.json").write_text('{"version": 3}')
    (d / "model_user_consumed.pkl").write_bytes(pickle.dumps({0: [1, 2]}))
    (d / "sub" / "weights").write_bytes(os.urandom(3000))
    return d


def _refused(directory, needle, **kw):
    with pytest.raises(Untrusted) as e:
        signing.check(str(directory), "load: m version 3", **kw)
    assert needle in e.value.detail and e.value.kind == "untrusted_model", e.value.detail
    return e.value.detail


def test_signed_version_verifies_and_any_change_is_refused(version, keyed):
    keyed(K1)
    assert signing.sign(str(version), "m", 3) == signing.key_id(K1.encode())
    manifest = json.loads((version / signing.SIG_FILE).read_text())
    assert set(manifest["files"]) == {"uro_meta.json", "model_user_consumed.pkl", "sub/weights"}
    signing.check(str(version), "load", "m", 3)
    signing.check(str(version), "load", "m", 3, origin="database")
    _refused(version, "signed as 'm' version 3", name="m", version=4)
    _refused(version, "signed as 'm' version 3", name="other", version=3)

    weights = (version / "sub" / "weights").read_bytes()
    (version / "sub" / "weights").write_bytes(weights[:-1] + bytes([weights[-1] ^ 1]))
    _refused(version, "'sub/weights' does not match its signed sha256")
    (version / "sub" / "weights").write_bytes(weights)
    (version / "extra.pkl").write_bytes(b"x")
    _refused(version, "'extra.pkl' is not in the signed manifest")
    (version / "extra.pkl").unlink()
    (version / "uro_meta.json").unlink()
    _refused(version, "'uro_meta.json' is signed but missing")


def test_a_manifest_altered_to_match_altered_files_is_refused(version, keyed):
    """What an attacker who can write the files but does not hold the key can do: change a
    file and write its new sha256 into the manifest (as into the registry's checksum)."""
    keyed(K1)
    signing.sign(str(version), "m", 3)
    (version / "model_user_consumed.pkl").write_bytes(pickle.dumps({0: [9]}))
    sig = version / signing.SIG_FILE
    manifest = json.loads(sig.read_text())
    manifest["files"]["model_user_consumed.pkl"] = signing._sha256(
        str(version / "model_user_consumed.pkl"))
    sig.write_text(json.dumps(manifest))
    _refused(version, "the signature does not match its manifest")
    manifest["key_id"] = "0123456789abcdef"  # nor by naming a key that is not configured
    sig.write_text(json.dumps(manifest))
    _refused(version, "not among the verification keys")
    sig.write_text("{not json")
    _refused(version, "is not a readable signature")


def test_another_key_is_refused_and_rotation_lists_both(version, keyed):
    keyed(K2)
    signing.sign(str(version), "m", 3)
    keyed(K1)
    _refused(version, f"signed with key '{signing.key_id(K2.encode())}'")
    keyed(K1, allow=True)  # allowing unsigned models does not allow wrongly signed ones
    _refused(version, "not among the verification keys")
    keyed(f"{K1}\n{K2}")  # rotation: K1 signs, K1 and K2 verify
    signing.check(str(version), "load", "m", 3)
    assert signing.keys().signing == K1.encode()


def test_unsigned_refused_with_a_key_allowed_when_configured(version, keyed):
    keyed(K1)
    _refused(version, "not signed (no uro_sig.json)")
    keyed(K1, allow=True)
    signing.check(str(version), "load", "m", 3)
    signing.check(str(version), "load", "m", 3, origin="database")


def test_without_a_key_the_model_dir_is_trusted_and_the_database_is_not(version, keyed):
    keyed()
    assert signing.sign(str(version), "m", 3) is None
    assert not (version / signing.SIG_FILE).exists()
    signing.check(str(version), "load", "m", 3)  # the model directory, as it is
    _refused(version, "no model key is configured", origin="database")
    with pytest.raises(Untrusted, match="no model key is configured"):
        signing.check_fetchable("load: m from the database")
    with pytest.raises(Untrusted, match="a version to publish must be signed"):
        signing.check(str(version), "publish", "m", 3, origin="publish")
    keyed(allow=True)
    signing.check_fetchable("load: m from the database")
    signing.check(str(version), "load", "m", 3, origin="database")
    signing.check(str(version), "publish", "m", 3, origin="publish")


def test_key_configuration(tmp_path, version, keyed):
    f = tmp_path / "keys"
    f.write_text(f"# the new key signs, the old one still verifies\n{K3}\n\n{K1}\n")
    keyed(K2, key_file=f)  # the file wins over the variable
    k = signing.keys()
    assert k.signing == K3.encode() and set(k.by_id) == {signing.key_id(K3.encode()),
                                                         signing.key_id(K1.encode())}
    f.write_text("short\n")
    with pytest.raises(Untrusted, match="key 1 is shorter than 32 characters"):
        signing.sign(str(version), "m", 3)
    keyed(key_file=tmp_path / "missing")
    _refused(version, "cannot be read: No such file or directory")  # fails closed
    keyed("  \n ")
    assert signing.keys().signing is None and not signing.keys().error


def _plant_pickle(path, marker):
    """A pickle that creates ``marker`` when it is loaded: what a registry writer could ship."""
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    path.write_bytes(pickle.dumps(Payload()))


def test_a_planted_pickle_never_runs(itemcf, tmp_path, keyed, saved):
    """ItemCF is loaded through libreco's DataInfo.load, which unpickles user_consumed."""
    entry = registry.get("itemcf_int")
    version, path = saved("itemcf_int")
    assert os.path.isfile(os.path.join(path, signing.SIG_FILE))
    assert registry.load("itemcf_int", version).n_items == entry.n_items
    marker = tmp_path / "pwned"
    _plant_pickle(Path(path) / "model_user_consumed.pkl", marker)
    with pytest.raises(Untrusted, match="'model_user_consumed.pkl' does not match"):
        commands.load("itemcf_int", {"version": version})
    assert not marker.exists()
    # the same through an explicit path
    with pytest.raises(Untrusted):
        commands.load("itemcf_int", {"path": path})
    assert not marker.exists()
    # the control: without a key the model directory is trusted, and the pickle runs
    keyed()
    with pytest.raises(Exception):
        registry.load("itemcf_int", version)
    assert marker.exists()


def test_a_snapshot_model_is_verified_again_before_libreco_loads_it(rows, saved):
    """An embedding model is served from serving/; libreco's files are read only when
    needed (save, evaluate), later: they are verified again then."""
    # A model of its own, trained here: the session's als_str may by now be an entry that
    # test_models loaded unsigned from disk, which a save under a key rightly refuses.
    train_capturing("als_signed", {"algorithm": "ALS", "data": (Atom("rows"), str_rows(rows)),
                                   "params": [("embed_size", 8), ("n_epochs", 1)],
                                   "save": False})
    version, path = saved("als_signed")
    entry = registry.load("als_signed", version)
    assert entry._model is None
    with open(os.path.join(path, "model_data_info.npz"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(Untrusted, match="model_data_info.npz"):
        entry.model
