"""Checksummed atomic files (mmgraph.io): every kind of damage is refused with the path."""

import os

import pytest
import torch

from mmgraph.io import CorruptFileError, load_file, save_file


def _payload():
    return {"weights": torch.randn(64, 32, generator=torch.Generator().manual_seed(0)), "name": "model", "config": {"dim": 64, "tasks": ["a", "b"]}}


def test_round_trip_is_exact(tmp_path):
    payload = _payload()
    path = save_file(tmp_path / "sub" / "m.pt", payload, kind="model")
    loaded = load_file(path, kind="model")
    assert torch.equal(loaded["weights"], payload["weights"])
    assert loaded["config"] == payload["config"]
    envelope = torch.load(path, weights_only=True)  # the file itself is a plain weights_only dict
    assert envelope["kind"] == "model" and len(envelope["sha256"]) == 64


@pytest.mark.parametrize("seed", range(12))
def test_single_bit_flip_is_refused_with_the_path(tmp_path, seed):
    path = save_file(tmp_path / "m.pt", _payload(), kind="model")
    data = bytearray(path.read_bytes())
    generator = torch.Generator().manual_seed(seed)
    position = int(torch.randint(len(data), (1,), generator=generator))
    data[position] ^= 1 << int(torch.randint(8, (1,), generator=generator))
    path.write_bytes(bytes(data))
    try:
        loaded = load_file(path, kind="model")
    except CorruptFileError as error:
        assert str(path) in str(error)
        assert "corrupt" in str(error)
        return
    # a flip that torch never reads (zip padding, an unused header byte) must leave the content intact
    assert torch.equal(loaded["weights"], _payload()["weights"]) and loaded["config"] == _payload()["config"]


def test_flips_in_the_tensor_data_are_all_caught(tmp_path):
    payload = _payload()
    path = save_file(tmp_path / "m.pt", payload, kind="model")
    clean = path.read_bytes()
    needle = payload["weights"].numpy().tobytes()[:64]
    start = clean.find(needle)
    assert start > 0, "the payload bytes are stored uncompressed"
    for offset in range(0, 64 * 32 * 4, 997):
        damaged = bytearray(clean)
        damaged[start + offset] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptFileError, match="SHA-256"):
            load_file(path, kind="model")


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1])
def test_truncated_file_is_refused_with_the_path(tmp_path, keep):
    path = save_file(tmp_path / "m.pt", _payload(), kind="checkpoint")
    data = path.read_bytes()
    cut = keep if isinstance(keep, int) and keep >= 0 else (int(len(data) * keep) if keep > 0 else len(data) - 1)
    path.write_bytes(data[:cut])
    with pytest.raises(CorruptFileError, match="truncated") as info:
        load_file(path, kind="checkpoint")
    assert str(path) in str(info.value)
    assert "weights_only=False" not in str(info.value)


def test_random_bytes_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CorruptFileError, match="corrupt"):
        load_file(path, kind="model")
    torch.save({"model": torch.zeros(3)}, tmp_path / "plain.pt")
    with pytest.raises(CorruptFileError, match="not an mmgraph model file"):
        load_file(tmp_path / "plain.pt", kind="model")
    save_file(tmp_path / "ckpt.pt", _payload(), kind="checkpoint")
    with pytest.raises(CorruptFileError, match="expected an mmgraph model file"):
        load_file(tmp_path / "ckpt.pt", kind="model")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_file(tmp_path / "missing.pt", kind="model")


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    path = tmp_path / "m.pt"
    dead = tmp_path / "m.pt.tmp999999999"  # no such pid
    dead.write_bytes(b"partial")
    alive = tmp_path / f"m.pt.tmp{os.getppid()}"  # a running process: maybe still writing
    alive.write_bytes(b"partial")
    other = tmp_path / "other.pt.tmp999999999"
    other.write_bytes(b"partial")
    save_file(path, _payload(), kind="model")
    assert not dead.exists()
    assert alive.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.pt", alive.name, other.name])


def test_envelope_of_a_newer_format_says_upgrade_not_corrupt(tmp_path):
    from mmgraph.io import IncompatibleFileError

    path = tmp_path / "newer.pt"
    torch.save({"mmgraph_file": 2, "kind": "model", "sha256": "0" * 64, "payload": torch.zeros(1, dtype=torch.uint8)},
               path)
    with pytest.raises(IncompatibleFileError, match=r"newer.pt: written by a newer mmgraph \(file format 2; .*"
                                                    r"upgrade mmgraph"):
        load_file(path, kind="model")
