"""A fresh SoftHSM2 token per test, in the test's own folder, and custos homes keeping their
keys in it (``[keys] provider = "pkcs11"``).

SoftHSM2 reads ``$SOFTHSM2_CONF`` (here: a config naming a token folder under the test's
temporary folder) when the module is initialised; each token has a label of its own, so the
provider's reload-when-not-found finds it even though the module stays loaded between tests.
``scripts/test.d/07-softhsm2.sh`` installs SoftHSM2, so these tests are skipped only where it
is genuinely absent.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from custos.access import Custos

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PIN = "4711-custos"
SO_PIN = "so-0815-custos"


@dataclass(frozen=True)
class SoftToken:
    """A SoftHSM2 token made for one test: its module, label and PINs, and its config."""

    module: Path
    label: str
    pin: str
    so_pin: str
    conf: Path

    def keys_section(self, **extra: str) -> str:
        """``[keys]`` of config.toml naming this token."""
        lines = ["[keys]", 'provider = "pkcs11"', f'module = "{self.module}"']
        lines.append(f'token = "{self.label}"')
        lines += [f'{key} = "{value}"' for key, value in extra.items()]
        return "\n".join(lines) + "\n"


def make_token_folder(folder: Path) -> Path:
    """A SoftHSM2 config whose tokens live under ``folder``; returns the config's path."""
    (folder / "tokens").mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n",
        encoding="utf-8",
    )
    return conf


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftToken:
    """A new, initialised SoftHSM2 token (and ``$SOFTHSM2_CONF``, ``$CUSTOS_PKCS11_PIN``)."""
    tool = shutil.which("softhsm2-util")
    if tool is None or not MODULE.exists():
        pytest.skip("SoftHSM2 is not installed (scripts/test.d/07-softhsm2.sh installs it)")
    conf = make_token_folder(tmp_path / "softhsm")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    label = f"custos-{uuid.uuid4().hex[:12]}"
    subprocess.run(
        [tool, "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SO_PIN],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("CUSTOS_PKCS11_PIN", PIN)
    return SoftToken(MODULE, label, PIN, SO_PIN, conf)


@pytest.fixture
def token_home(home: Path, softhsm: SoftToken) -> Path:
    """A home folder whose config.toml keeps the keys in the test's token (not yet init)."""
    home.mkdir(parents=True)
    (home / "config.toml").write_text(softhsm.keys_section(), encoding="utf-8")
    return home


@pytest.fixture
def token_system(token_home: Path) -> Iterator[Custos]:
    """An initialised installation whose vault KEK and log key are in the token."""
    with Custos.init(token_home) as opened:
        yield opened
