"""The programme keys a box trusts: ``secrets/model_keys/<key_id>.pub``, one line of
base64 each (appliance/wire/model_signature.py)."""

from __future__ import annotations

from pathlib import Path

from appliance.wire.model_signature import key_id, read_public
from appliance.wire.secret_files import write_secret

KEYS_DIR = Path("secrets") / "model_keys"


def keys_dir(data_dir: Path) -> Path:
    return Path(data_dir) / KEYS_DIR


def trust(data_dir: Path, public: str) -> str:
    """Trust a programme's public key (base64 or PEM text); returns its key id."""
    text = read_public(public)
    kid = key_id(text)
    write_secret(keys_dir(data_dir) / f"{kid}.pub", (text + "\n").encode())
    return kid


def trusted(data_dir: Path) -> dict[str, str]:
    """key id -> public key text, for every trusted key (a mislabelled file is skipped)."""
    found = {}
    folder = keys_dir(data_dir)
    for path in sorted(folder.glob("*.pub")) if folder.is_dir() else []:
        try:
            text = read_public(path.read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - an unreadable key file trusts nothing
            continue
        if key_id(text) == path.stem:
            found[path.stem] = text
    return found
