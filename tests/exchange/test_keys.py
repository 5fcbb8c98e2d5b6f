from __future__ import annotations

import stat
from pathlib import Path

from apps.exchange.keys import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, ensure_key_pair, load_key_pair
from apps.kalshi.signing import load_private_key, load_public_key, sign, verify


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _matches(pair_dir: Path) -> bool:
    private = load_private_key((pair_dir / PRIVATE_KEY_FILE).read_bytes())
    public = load_public_key((pair_dir / PUBLIC_KEY_FILE).read_bytes())
    return verify(public, sign(private, 1, "GET", "/x"), 1, "GET", "/x")


def test_creates_a_matching_pair_with_a_private_mode(tmp_path: Path) -> None:
    pair = ensure_key_pair(tmp_path / "data")
    assert pair.private_key == tmp_path / "data" / "sim_private_key.pem"
    assert pair.public_key == tmp_path / "data" / "sim_public_key.pem"
    assert _mode(pair.private_key) == 0o600
    assert _matches(tmp_path / "data")
    assert [p.name for p in sorted((tmp_path / "data").iterdir())] == [PRIVATE_KEY_FILE, PUBLIC_KEY_FILE]


def test_is_idempotent(tmp_path: Path) -> None:
    first = ensure_key_pair(tmp_path)
    before = (first.private_key.read_bytes(), first.public_key.read_bytes())
    second = ensure_key_pair(tmp_path)
    assert (second.private_key.read_bytes(), second.public_key.read_bytes()) == before


def test_public_key_is_rederived_from_an_existing_private_key(tmp_path: Path) -> None:
    pair = ensure_key_pair(tmp_path)
    private_before = pair.private_key.read_bytes()
    pair.public_key.unlink()
    ensure_key_pair(tmp_path)
    assert pair.private_key.read_bytes() == private_before
    assert _matches(tmp_path)
    pair.public_key.write_bytes(b"stale")
    ensure_key_pair(tmp_path)
    assert _matches(tmp_path)


def test_loading_the_pair_gives_the_keys_of_its_files(tmp_path: Path) -> None:
    loaded = load_key_pair(tmp_path)
    assert loaded.paths == ensure_key_pair(tmp_path)
    assert loaded.public_key_pem == loaded.paths.public_key.read_bytes()
    public = load_public_key(loaded.public_key_pem)
    assert verify(public, sign(loaded.private_key, 1, "GET", "/x"), 1, "GET", "/x")
