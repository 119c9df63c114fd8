"""Keys apart from the data: the vault's KEK and the log's signing key in a real SoftHSM2
token, on a real database (both backends), through the real composition root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pkcs11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from sqlalchemy import select

from custos.access import Custos
from custos.errors import ConfigurationError, CustosError, IntegrityError
from custos.ledger import NoteVerifier, open_checkpoint
from custos.ledger.token import TokenSigningKey
from custos.policy import AccessRequest
from custos.store.vault import VaultKeyRow
from custos.vault.token import TokenKek
from tests.factories import APPROVALS_WORLD, load_org, logins
from tests.keys.conftest import SoftToken, make_token_folder
from tests.ledger.signed_note import verify_note

PRECISE = AccessRequest(
    "emp-3001", "user-1", "ip_history", "trust_safety", ticket="T-11", precision="precise"
)


PRECISE_READ = (
    "read",
    "--principal",
    "emp-3001",
    "--subject",
    "user-1",
    "--category",
    "ip_history",
    "--purpose",
    "trust_safety",
    "--ticket",
    "T-11",
    "--precision",
    "precise",
)


def approved_world(system: Custos) -> Custos:
    """APPROVALS_WORLD with five logins of user-1 and an approved precise grant for them."""
    load_org(system, APPROVALS_WORLD)
    system.ingest(logins("user-1", count=5), "logins.jsonl")
    opened = system.request_access(
        principal="emp-3001",
        subject="user-1",
        categories=["ip_history"],
        purpose="trust_safety",
        ticket="T-11",
        precision="precise",
        reason="account takeover report",
    )
    system.approvals.approve(opened.id, "emp-3002", "matches the report")
    return system


def run_cli(home: Path, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a fresh process (no login inherited), with ``env`` changes."""
    environ = {**os.environ, "CUSTOS_HOME": str(home), "COLUMNS": "200"}
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return subprocess.run(
        [sys.executable, "-m", "custos", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        check=False,
    )


# -- with the PIN, everything works --------------------------------------------------------


def test_ingest_and_a_guarded_precise_read_decrypt_through_the_token(
    token_system: Custos,
) -> None:
    world = approved_world(token_system)
    result = world.read(PRECISE)
    assert (result.decision.outcome, result.decision.precision) == ("allow", "precise")
    assert [r["ip"] for r in result.records] == [f"198.51.100.{n}" for n in range(1, 6)]
    with world.db.session() as session:
        keks = {row.kek for row in session.scalars(select(VaultKeyRow))}
    assert keks == {world.vault.keys.kek_id}
    assert world.vault.keys.kek_id.startswith("pkcs11:")
    # No key material in the home folder: only the log's (public) name and the webhook secret.
    assert sorted(p.name for p in world.settings.keys_dir.iterdir()) == [
        "log.origin",
        "webhook.secret",
    ]


def test_checkpoints_are_signed_in_the_token_and_verify_with_the_existing_verifiers(
    token_system: Custos,
) -> None:
    token_system.ledger.append({"type": "test", "n": 1})
    note = token_system.ledger.checkpoint()
    vkey = token_system.ledger.signer.verifier_key()
    name, hex_id, _material = vkey.split("+", 2)
    assert name == (token_system.settings.keys_dir / "log.origin").read_text().strip()
    assert len(bytes.fromhex(hex_id)) == 4
    checkpoint, _ = open_checkpoint(note, NoteVerifier.parse(vkey))
    assert checkpoint.size == token_system.ledger.size()
    # And by a verifier written from the C2SP specifications, sharing no code with custos.
    assert verify_note(note, vkey).startswith(f"{name}\n")
    # The same log opened again (another process would) keeps its name and key.
    with Custos.open(token_system.settings.home) as again:
        assert again.ledger.signer.verifier_key() == vkey
        again.ledger.append({"type": "test", "n": 2})
        open_checkpoint(again.ledger.checkpoint(), NoteVerifier.parse(vkey))


def test_init_twice_keeps_the_keys(token_system: Custos) -> None:
    vkey = token_system.ledger.signer.verifier_key()
    kek = token_system.vault.keys.kek_id
    with Custos.init(token_system.settings.home) as again:
        assert again.ledger.signer.verifier_key() == vkey
        assert again.vault.keys.kek_id == kek


def test_a_wrapped_key_unwraps_only_under_its_own_id(token_system: Custos) -> None:
    keys = token_system.vault.keys
    data_key = os.urandom(32)
    blob = keys.wrap("user-1|ip_history|2026-W47", data_key)
    assert keys.unwrap("user-1|ip_history|2026-W47", blob) == data_key
    with pytest.raises(IntegrityError, match="does not unwrap"):
        keys.unwrap("user-2|ip_history|2026-W47", blob)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(IntegrityError):
        keys.unwrap("user-1|ip_history|2026-W47", tampered)
    with pytest.raises(IntegrityError):
        keys.unwrap("user-1|ip_history|2026-W47", blob[:20])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ids=st.lists(st.text(min_size=1, max_size=40), min_size=2, max_size=2, unique=True),
    data_key=st.binary(min_size=32, max_size=32),
)
def test_wrapping_round_trips_and_binds_any_id(
    token_system: Custos, ids: list[str], data_key: bytes
) -> None:
    keys = token_system.vault.keys
    blob = keys.wrap(ids[0], data_key)
    assert keys.unwrap(ids[0], blob) == data_key
    with pytest.raises(IntegrityError):
        keys.unwrap(ids[1], blob)


# -- the keys cannot leave the token -------------------------------------------------------


def test_the_keys_are_sensitive_unextractable_and_their_values_unreadable(
    token_system: Custos,
) -> None:
    token = token_system.token
    labels = token_system.settings.keys

    def inspect(session: pkcs11.Session) -> None:
        kek = session.get_key(ObjectClass.SECRET_KEY, label=labels.kek_label)
        signer = session.get_key(ObjectClass.PRIVATE_KEY, label=labels.log_key_label)
        for key in (kek, signer):
            assert key[Attribute.SENSITIVE] is True
            assert key[Attribute.EXTRACTABLE] is False
            assert key[Attribute.NEVER_EXTRACTABLE] is True
            assert key[Attribute.ALWAYS_SENSITIVE] is True
            assert key[Attribute.TOKEN] is True
            with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                key[Attribute.VALUE]
        # Nor can they be wrapped out under a key of the caller's choosing.
        carrier = session.generate_key(KeyType.AES, 256, template={Attribute.WRAP: True})
        for key in (kek, signer):
            with pytest.raises(pkcs11.exceptions.KeyUnextractable):
                carrier.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        # And the attributes cannot be turned back.
        with pytest.raises(pkcs11.exceptions.PKCS11Error):
            kek[Attribute.EXTRACTABLE] = True

    token.run("inspecting", inspect)


def test_an_extractable_key_under_the_label_is_refused(token_system: Custos) -> None:
    token = token_system.token

    def plant(session: pkcs11.Session) -> None:
        session.generate_key(
            KeyType.AES,
            256,
            label="planted",
            store=True,
            template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )

    token.run("planting", plant)
    with pytest.raises(ConfigurationError, match="extractable or not sensitive"):
        TokenKek(token, "planted")


def test_a_public_key_of_another_pair_is_refused(token_system: Custos) -> None:
    token = token_system.token
    assert TokenSigningKey.create(token, "other-pair")

    def relabel(session: pkcs11.Session) -> None:
        public = session.get_key(ObjectClass.PUBLIC_KEY, label="other-pair")
        public[Attribute.LABEL] = "stray"
        session.get_key(ObjectClass.PUBLIC_KEY, label=token_system.settings.keys.log_key_label)[
            Attribute.LABEL
        ] = "stray-too"
        public[Attribute.LABEL] = token_system.settings.keys.log_key_label

    token.run("relabelling", relabel)
    token.forget_objects()
    with pytest.raises(ConfigurationError, match="not one pair"):
        TokenSigningKey(token, token_system.settings.keys.log_key_label)


# -- a copy of the home folder and the database, without the PIN or the token ---------------


def copy_home(system: Custos, tmp_path: Path) -> Path:
    """A copy of the home folder, as a thief or a backup would take it (with SQLite the
    database is in it; with PostgreSQL the copy reaches the same database, as a DBA does)."""
    system.db.dispose()
    target = tmp_path / "stolen"
    shutil.copytree(system.settings.home, target)
    return target


def test_a_copy_without_the_pin_neither_decrypts_nor_signs(
    token_system: Custos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    approved_world(token_system)
    stolen = copy_home(token_system, tmp_path)
    monkeypatch.delenv("CUSTOS_PKCS11_PIN")
    with Custos.open(stolen) as copy:
        for use in (
            lambda: copy.vault,
            lambda: copy.ledger,
            lambda: copy.read(PRECISE),
        ):
            with pytest.raises(ConfigurationError, match="no PIN") as caught:
                use()
            assert "198.51.100" not in str(caught.value)
    monkeypatch.setenv("CUSTOS_PKCS11_PIN", "0000")
    with Custos.open(stolen) as copy, pytest.raises(ConfigurationError, match="wrong PIN"):
        copy.vault.release("user-1", "ip_history", "precise")


def test_a_copy_switched_to_local_keys_cannot_unwrap_the_data_keys(
    token_system: Custos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    approved_world(token_system)
    stolen = copy_home(token_system, tmp_path)
    monkeypatch.delenv("CUSTOS_PKCS11_PIN")
    (stolen / "config.toml").write_text("", encoding="utf-8")
    with Custos.open(stolen) as copy, pytest.raises(ConfigurationError, match=r"vault\.kek"):
        copy.vault.release("user-1", "ip_history", "precise")
    # A new local key made by `custos init` opens nothing that the token's KEK wrapped.
    with Custos.init(stolen) as copy:
        with pytest.raises(IntegrityError) as caught:
            copy.vault.release("user-1", "ip_history", "precise")
        assert "198.51.100" not in caught.value.message
        assert copy.vault.release("user-1", "ip_history", "coarse").count == 5


def test_a_copy_with_the_pin_but_without_the_token_fails_closed(
    token_system: Custos, tmp_path: Path
) -> None:
    approved_world(token_system)
    stolen = copy_home(token_system, tmp_path)
    elsewhere = make_token_folder(tmp_path / "another-machine")
    for args in (("log", "checkpoint"), PRECISE_READ):
        result = run_cli(stolen, *args, SOFTHSM2_CONF=str(elsewhere))
        assert result.returncode == 1, result.stdout + result.stderr
        assert "no such token" in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
    # Where the token is (the host itself), the same copy and PIN read: root with the PIN wins.
    here = run_cli(stolen, *PRECISE_READ, "--json")
    assert here.returncode == 0, here.stderr
    assert [r["ip"] for r in json.loads(here.stdout)["records"]] == [
        f"198.51.100.{n}" for n in range(1, 6)
    ]


# -- clear configuration errors --------------------------------------------------------------


def write_keys(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("change", "env", "message"),
    [
        ({"module": "/nonexistent/libpkcs11.so"}, {}, "no such file"),
        ({"module": "/etc/hostname"}, {}, "cannot be loaded as a PKCS#11 library"),
        ({"token": "no-such-token"}, {}, "no such token"),
        ({}, {"CUSTOS_PKCS11_PIN": None}, "no PIN"),
        ({}, {"CUSTOS_PKCS11_PIN": "wrong"}, "wrong PIN"),
    ],
)
def test_setup_mistakes_are_named_before_anything_is_created(
    home: Path,
    softhsm: SoftToken,
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, str],
    env: dict[str, str | None],
    message: str,
) -> None:
    fields = {"module": str(softhsm.module), "token": softhsm.label, **change}
    write_keys(
        home,
        '[keys]\nprovider = "pkcs11"\n' + "".join(f'{k} = "{v}"\n' for k, v in fields.items()),
    )
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key)
        else:
            monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError, match=message) as caught:
        Custos.init(home)
    assert softhsm.pin not in str(caught.value)
    assert sorted(p.name for p in home.iterdir()) == ["config.toml"]


def test_a_missing_key_is_named(token_system: Custos) -> None:
    home = token_system.settings.home
    text = (home / "config.toml").read_text()
    (home / "config.toml").write_text(
        text + 'kek_label = "gone-kek"\nlog_key_label = "gone-log"\n', encoding="utf-8"
    )
    with Custos.open(home) as opened:
        with pytest.raises(ConfigurationError, match="no vault key-encryption key labelled"):
            opened.vault  # noqa: B018 - opening it is the test
        with pytest.raises(ConfigurationError, match="no signing key labelled 'gone-log'"):
            opened.ledger  # noqa: B018


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('[keys]\nprovider = "kms"\n', "provider must be 'local' or 'pkcs11'"),
        ('[keys]\nprovider = "pkcs11"\ntoken = "t"\n', "needs module"),
        ('[keys]\nprovider = "pkcs11"\nmodule = "/m.so"\n', "needs token"),
        ('[keys]\nkek_label = "same"\nlog_key_label = "same"\n', "must differ"),
        ('[keys]\nkek_label = ""\n', "kek_label must be a non-empty string"),
        ('[keys]\nprovider = "pkcs11"\npin = "123456"\n', "must not hold the token's PIN"),
    ],
)
def test_keys_section_mistakes(home: Path, section: str, message: str) -> None:
    write_keys(home, section)
    with pytest.raises(ConfigurationError, match=message) as caught:
        Custos.init(home)
    assert "123456" not in str(caught.value)


# -- the command line -------------------------------------------------------------------------


def test_cli_init_keys_and_checkpoint_with_a_token(token_home: Path, softhsm: SoftToken) -> None:
    assert run_cli(token_home, "init").returncode == 0
    shown = run_cli(token_home, "keys", "--json")
    assert shown.returncode == 0, shown.stderr
    vkey = json.loads(shown.stdout)["verifier_key"]
    NoteVerifier.parse(vkey)
    note = run_cli(token_home, "log", "checkpoint")
    assert note.returncode == 0, note.stderr
    verify_note(note.stdout, vkey)
    verified = run_cli(token_home, "log", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    refused = run_cli(token_home, "log", "checkpoint", CUSTOS_PKCS11_PIN=None)
    assert refused.returncode == 1
    assert "no PIN" in refused.stderr
    assert "CUSTOS_PKCS11_PIN" in refused.stderr
    wrong = run_cli(token_home, "keys", CUSTOS_PKCS11_PIN="not-it")
    assert wrong.returncode == 1
    assert "wrong PIN" in wrong.stderr
    assert "not-it" not in wrong.stderr
    assert softhsm.pin not in refused.stderr + wrong.stderr


def test_a_session_closed_underneath_is_logged_in_again(token_system: Custos) -> None:
    token_system.ledger.append({"type": "test"})
    vkey = token_system.ledger.signer.verifier_key()
    token_system.token.run("closing", lambda session: session.close())  # logs out, too
    open_checkpoint(token_system.ledger.checkpoint(), NoteVerifier.parse(vkey))
    data_key = os.urandom(32)
    assert token_system.vault.keys.unwrap("k", token_system.vault.keys.wrap("k", data_key)) == (
        data_key
    )


def test_another_token_appearing_does_not_break_the_open_ones(
    token_system: Custos, softhsm: SoftToken
) -> None:
    # A token unknown to the loaded module makes it re-initialise, which ends every session.
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "second",
            "--pin",
            "other-pin",
            "--so-pin",
            "other-so-pin",
        ],
        check=True,
        capture_output=True,
    )
    from custos.hsm import Token

    Token(softhsm.module, "second", "other-pin")
    token_system.ledger.append({"type": "test"})
    token_system.ledger.checkpoint()
    data_key = os.urandom(32)
    assert token_system.vault.keys.unwrap("k", token_system.vault.keys.wrap("k", data_key)) == (
        data_key
    )


def test_errors_reach_the_top_as_custos_errors(token_system: Custos) -> None:
    # A failing token operation is a CustosError (one error tree), never a raw PKCS#11 one.
    def fail(session: pkcs11.Session) -> None:
        session.get_key(ObjectClass.SECRET_KEY, label="custos-vault-kek").encrypt(
            b"x", mechanism=Mechanism.RSA_PKCS
        )

    with pytest.raises(CustosError, match="failed"):
        token_system.token.run("a bad call", fail)


def test_the_export_key_is_wrapped_in_the_token_and_useless_without_it(
    token_system: Custos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from custos.export import Cursors, load_key
    from custos.export.seal import KEY_FILE

    key, made = load_key(token_system.settings)
    assert made
    cursors = Cursors(token_system.db, key)
    cursors.get("siem")  # made and sealed under the token-wrapped key
    assert load_key(token_system.settings)[0].id == key.id
    # The home's copy switched to local keys (a new KEK) cannot unwrap it.
    stolen = copy_home(token_system, tmp_path)
    monkeypatch.delenv("CUSTOS_PKCS11_PIN")
    (stolen / "config.toml").write_text("", encoding="utf-8")
    assert (stolen / "keys" / KEY_FILE).exists()
    with Custos.init(stolen) as copy, pytest.raises(ConfigurationError, match="vault key"):
        load_key(copy.settings)
