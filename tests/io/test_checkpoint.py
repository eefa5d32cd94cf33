"""Checkpoints: round trip, tamper detection, refusal of pickles, metadata rules, atomic writes."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch

import endofed
from endofed.errors import EndofedError
from endofed.io import checkpoint as ck


class _CreatesMarker:
    """Unpickling this object calls ``open(marker, "w")``, i.e. creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def sample_tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "encoder.weight": torch.randn(4, 3, generator=gen),
        "encoder.half": torch.randn(5, generator=gen).to(torch.float16),
        "encoder.bf16": torch.randn(2, 3, generator=gen).to(torch.bfloat16),
        "encoder.float64": torch.randn(3, generator=gen, dtype=torch.float64),
        "encoder.step": torch.tensor([3, -7, 2**40], dtype=torch.int64),
        "encoder.mask": torch.tensor([True, False, True]),
        "encoder.bytes": torch.arange(6, dtype=torch.uint8).reshape(2, 3),
        "encoder.scalar": torch.tensor(1.5),
    }


def forge_metadata(path: Path, **fields: object) -> None:
    """Write a well-formed metadata file whose hashes match whatever ``path`` holds now (and its own content)."""
    record = {"format_version": ck.FORMAT_VERSION, "sha256": ck.file_sha256(path), **fields}
    record[ck.METADATA_HASH] = ck.metadata_sha256(record)
    ck.metadata_path(path).write_text(json.dumps(record), encoding="utf-8")


def edit_metadata(path: Path, **changes: object) -> None:
    """Change fields of ``path``'s metadata by hand, as an editor would (the hashes are left as they were)."""
    record = json.loads(ck.metadata_path(path).read_text()) | changes
    ck.metadata_path(path).write_text(json.dumps(record, indent=2), encoding="utf-8")


def test_round_trip_tensors_and_metadata(tmp_path: Path) -> None:
    tensors = sample_tensors()
    meta = {"round": 3, "site": "a", "metrics": {"auc": 0.8, "ece": None}, "shape": [1, 2]}
    path = ck.save_checkpoint(tmp_path / "ckpt.safetensors", tensors, meta)
    assert path == tmp_path / "ckpt.safetensors"
    loaded, loaded_meta = ck.load_checkpoint(path)
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert loaded[name].shape == tensor.shape, name
        assert torch.equal(loaded[name], tensor), name
    assert {k: loaded_meta[k] for k in meta} == meta
    assert loaded_meta["endofed_version"] == endofed.__version__
    assert loaded_meta["format_version"] == ck.FORMAT_VERSION
    assert loaded_meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded_meta["created_utc"].endswith("+00:00")
    # One hash over both files: the metadata's canonical JSON (all keys but its own hash), which holds sha256.
    body = {k: v for k, v in loaded_meta.items() if k != "metadata_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert loaded_meta["metadata_sha256"] == hashlib.sha256(canonical).hexdigest()


def test_non_contiguous_shared_and_grad_tensors_are_saved(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    weight = torch.nn.Parameter(torch.ones(2, 2))
    tensors = {
        "transposed": base.t(),  # non-contiguous view
        "row": base[1],  # covers part of its storage
        "base": base,
        "tied_a": weight,  # same tensor under two names (tied weights)
        "tied_b": weight,
    }
    path = ck.save_checkpoint(tmp_path / "s.safetensors", tensors, {})
    loaded, _ = ck.load_checkpoint(path)
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor.detach()), name
    assert not loaded["tied_a"].requires_grad


def test_tampered_file_is_rejected(tmp_path: Path) -> None:
    path = ck.save_checkpoint(tmp_path / "t.safetensors", {"w": torch.zeros(16)}, {})
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last tensor byte; the header stays valid
    path.write_bytes(bytes(data))
    with pytest.raises(ck.CheckpointError, match=r"checkpoint .*t\.safetensors is corrupt or was modified"):
        ck.load_checkpoint(path)


def test_tampered_metadata_hash_is_rejected(tmp_path: Path) -> None:
    path = ck.save_checkpoint(tmp_path / "t.safetensors", {"w": torch.zeros(4)}, {"k": 1})
    meta_file = ck.metadata_path(path)
    record = json.loads(meta_file.read_text())
    record["sha256"] = "0" * 64
    meta_file.write_text(json.dumps(record))
    with pytest.raises(EndofedError, match="corrupt or was modified"):
        ck.load_checkpoint(path)


def test_site_local_state_without_content_hash(tmp_path: Path) -> None:
    tensors = {"optim.state.0.exp_avg": torch.arange(4.0)}
    path = ck.save_checkpoint(tmp_path / "mae.safetensors", tensors, {"round": 2}, content_hash=False)
    assert json.loads(ck.metadata_path(path).read_text())["sha256"] is None
    loaded, meta = ck.load_checkpoint(path, verify_hash=False)  # the site reads back its own state
    assert torch.equal(loaded["optim.state.0.exp_avg"], tensors["optim.state.0.exp_avg"]) and meta["round"] == 2
    # The default loader (anything exchanged or published) refuses a file it cannot verify.
    with pytest.raises(ck.CheckpointError, match=r"mae\.safetensors was written without a content hash"):
        ck.load_checkpoint(path)
    # Not verifying the hash skips nothing else: a pickle is still refused before any tensor is read.
    path.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(ck.CheckpointError, match="not a safetensors file"):
        ck.load_checkpoint(path, verify_hash=False)


def test_hashed_checkpoint_can_be_read_without_verifying(tmp_path: Path) -> None:
    path = ck.save_checkpoint(tmp_path / "h.safetensors", {"w": torch.zeros(16)}, {})
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    loaded, _ = ck.load_checkpoint(path, verify_hash=False)  # no check asked for: the flipped byte is read
    assert loaded["w"][-1] != 0
    with pytest.raises(ck.CheckpointError, match="corrupt or was modified"):
        ck.load_checkpoint(path)


def test_pickle_renamed_safetensors_is_never_unpickled(tmp_path: Path) -> None:
    # Control: this payload really does create its marker when unpickled.
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_CreatesMarker(control)))
    assert control.exists()

    marker = tmp_path / "marker"
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(pickle.dumps({"w": _CreatesMarker(marker)}))
    forge_metadata(plain)  # even with matching metadata, the file is refused
    with pytest.raises(ck.CheckpointError, match=r"plain\.safetensors is not a safetensors file"):
        ck.load_checkpoint(plain)

    zipped = tmp_path / "zipped.safetensors"
    torch.save({"w": _CreatesMarker(marker)}, zipped)  # torch.save's zip-of-pickle format
    forge_metadata(zipped)
    with pytest.raises(ck.CheckpointError, match="not a safetensors file"):
        ck.load_checkpoint(zipped)
    assert not marker.exists()


def test_missing_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ck.CheckpointError, match=r"checkpoint .*absent\.safetensors not found"):
        ck.load_checkpoint(tmp_path / "absent.safetensors")
    path = ck.save_checkpoint(tmp_path / "m.safetensors", {"w": torch.ones(2)}, {})
    ck.metadata_path(path).unlink()
    with pytest.raises(ck.CheckpointError, match=r"metadata .*m\.json not found"):
        ck.load_checkpoint(path)


def test_broken_metadata_is_rejected(tmp_path: Path) -> None:
    path = ck.save_checkpoint(tmp_path / "b.safetensors", {"w": torch.ones(2)}, {})
    meta_file = ck.metadata_path(path)
    meta_file.write_text("{not json")
    with pytest.raises(ck.CheckpointError, match="is not valid JSON"):
        ck.load_checkpoint(path)
    meta_file.write_text(json.dumps({"format_version": ck.FORMAT_VERSION}))
    with pytest.raises(ck.CheckpointError, match="has no sha256 entry"):
        ck.load_checkpoint(path)
    meta_file.write_text(json.dumps({"format_version": 99, "sha256": ck.file_sha256(path)}))
    with pytest.raises(ck.CheckpointError, match="format_version 99"):
        ck.load_checkpoint(path)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"obj": object()}, "metadata must be JSON-serialisable"),
        ({"s": {1, 2}}, "metadata must be JSON-serialisable"),
        ({"auc": float("nan")}, "no NaN/inf"),
        ({1: "x"}, "metadata keys must be strings, got 1"),
        ({"sha256": "x"}, "metadata key 'sha256' is reserved"),
        (["not", "a", "mapping"], "metadata must be a mapping"),
    ],
)
def test_bad_metadata_raises_and_writes_nothing(tmp_path: Path, metadata: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ck.save_checkpoint(tmp_path / "x.safetensors", {"w": torch.ones(1)}, metadata)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_bad_tensors_and_paths_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must end in \.safetensors, got '.*x\.pt'"):
        ck.save_checkpoint(tmp_path / "x.pt", {"w": torch.ones(1)}, {})
    with pytest.raises(ValueError, match=r"tensors\['w'\] must be a torch.Tensor, got list"):
        ck.save_checkpoint(tmp_path / "x.safetensors", {"w": [1.0]}, {})  # type: ignore[dict-item]


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "deep" / "dir"
    path = ck.save_checkpoint(out / "a.safetensors", {"w": torch.ones(3)}, {"v": 1})
    ck.save_checkpoint(path, {"w": torch.full((3,), 2.0)}, {"v": 2})  # overwrite in place
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.safetensors"]

    def broken_save(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(path, {"w": torch.zeros(3)}, {"v": 3})
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.safetensors"]
    tensors, meta = ck.load_checkpoint(path)  # the previous checkpoint is intact
    assert torch.equal(tensors["w"], torch.full((3,), 2.0)) and meta["v"] == 2


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
        self.head = torch.nn.Linear(4, 2)


def test_encoder_state_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source, target = _Model(), _Model()
    state = ck.module_state(source, "encoder")
    assert set(state) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert set(ck.module_state(source)) == {f"encoder.{k}" for k in state} | {"head.weight", "head.bias"}
    path = ck.save_checkpoint(tmp_path / "enc.safetensors", state, {"part": "encoder"})
    loaded, _ = ck.load_checkpoint(path)
    ck.load_module_state(target.encoder, loaded)
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(target.encoder.state_dict()[key], value)
    assert not torch.equal(target.head.weight, source.head.weight)  # only the encoder moved
    with pytest.raises(ValueError, match="no submodule 'decoder'"):
        ck.module_state(source, "decoder")
    with pytest.raises(ValueError, match="state does not fit Sequential"):
        ck.load_module_state(target.encoder, {"0.weight": loaded["0.weight"]})


def test_config_hash_is_stable_and_sensitive() -> None:
    assert ck.config_hash({"b": 1, "a": [2, 3]}) == ck.config_hash({"a": [2, 3], "b": 1})
    assert ck.config_hash({"a": 1}) == hashlib.sha256(b'{"a":1}').hexdigest()
    assert ck.config_hash({"a": 1}) != ck.config_hash({"a": 2})
    assert ck.config_hash({"a": {"y": 1, "x": 2}}) == ck.config_hash({"a": {"x": 2, "y": 1}})
    with pytest.raises(ValueError, match="config dict must be JSON-serialisable"):
        ck.config_hash({"a": object()})


def test_a_failed_write_is_the_os_error_it_was(tmp_path):
    import errno

    from safetensors import SafetensorError

    from endofed.io.checkpoint import os_error_of

    error = os_error_of(SafetensorError("Error while serializing: I/O error: No space left (os error 28)"), tmp_path)
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC and error.filename == str(tmp_path)
    assert "cannot write checkpoint" in str(os_error_of(SafetensorError("something else"), tmp_path))


# --------------------------------------------------------------------------------------------------
# One hash over both files (format 2): edits, swaps and torn writes of either file are refused
# --------------------------------------------------------------------------------------------------


def test_an_edited_metadata_value_is_refused_naming_the_json(tmp_path: Path) -> None:
    path = ck.save_checkpoint(tmp_path / "s.safetensors", {"w": torch.ones(4)}, {"round": 3, "claims": {"7": 12}})
    edit_metadata(path)  # only reformatted (indent, key order): the canonical content is the same
    assert ck.load_checkpoint(path)[1]["round"] == 3
    for changes in ({"round": 40}, {"claims": {"7": 10**12}}, {"extra": 1}):
        ck.save_checkpoint(path, {"w": torch.ones(4)}, {"round": 3, "claims": {"7": 12}})
        edit_metadata(path, **changes)
        expected = r"checkpoint metadata .*s\.json is corrupt or was modified \(metadata_sha256 differs"
        with pytest.raises(ck.CheckpointError, match=expected):
            ck.load_checkpoint(path)
        with pytest.raises(ck.CheckpointError, match=expected):
            ck.read_metadata(path)
    record = json.loads(ck.metadata_path(path).read_text())
    del record["metadata_sha256"]
    ck.metadata_path(path).write_text(json.dumps(record))
    with pytest.raises(ck.CheckpointError, match=r"s\.json has no metadata_sha256 entry"):
        ck.load_checkpoint(path)
    ck.save_checkpoint(path, {"w": torch.ones(4)}, {"round": 3})
    ck.metadata_path(path).write_text(ck.metadata_path(path).read_text().replace('"round": 3', '"round": NaN'))
    with pytest.raises(ck.CheckpointError, match=r"s\.json is corrupt or was modified"):  # NaN: refused, no crash
        ck.load_checkpoint(path)


def test_another_checkpoints_tensor_file_is_refused_naming_it(tmp_path: Path) -> None:
    ours = ck.save_checkpoint(tmp_path / "ours.safetensors", {"w": torch.zeros(8)}, {"round": 1})
    theirs = ck.save_checkpoint(tmp_path / "theirs.safetensors", {"w": torch.ones(8)}, {"round": 1})
    ours.write_bytes(theirs.read_bytes())  # same size, same header: a valid safetensors file of another run
    expected = r"ours\.safetensors is corrupt .*differs from its metadata ours\.json"
    with pytest.raises(ck.CheckpointError, match=expected):
        ck.load_checkpoint(ours)


class _Killed(BaseException):
    """Stands for the process dying at a write step (not an ``Exception``: nothing cleans up after it)."""


def test_a_torn_write_is_refused_in_either_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = ck.save_checkpoint(tmp_path / "s.safetensors", {"w": torch.zeros(8)}, {"round": 1})
    old_tensors, old_json = path.read_bytes(), ck.metadata_path(path).read_text()

    def killed(record: object) -> str:
        raise _Killed

    with monkeypatch.context() as patch:  # dies after the tensor file was replaced, before the JSON was
        patch.setattr(ck, "metadata_sha256", killed)
        with pytest.raises(_Killed):
            ck.save_checkpoint(path, {"w": torch.ones(8)}, {"round": 2})
    assert ck.metadata_path(path).read_text() == old_json and path.read_bytes() != old_tensors
    with pytest.raises(ck.CheckpointError, match=r"s\.safetensors is corrupt or was modified"):
        ck.load_checkpoint(path)
    ck.save_checkpoint(path, {"w": torch.ones(8)}, {"round": 2})
    path.write_bytes(old_tensors)  # the reverse: new JSON, old tensors (e.g. a copy restored file by file)
    with pytest.raises(ck.CheckpointError, match=r"s\.safetensors is corrupt or was modified"):
        ck.load_checkpoint(path)


def test_format_1_checkpoints_load_with_the_old_check(tmp_path: Path) -> None:
    path = ck.save_checkpoint(tmp_path / "old.safetensors", {"w": torch.ones(4)}, {"round": 3})
    record = json.loads(ck.metadata_path(path).read_text()) | {"format_version": 1}
    del record["metadata_sha256"]  # as endofed wrote it before format 2
    ck.metadata_path(path).write_text(json.dumps(record))
    assert ck.load_checkpoint(path)[1]["round"] == 3
    edit_metadata(path, round=40)
    assert ck.load_checkpoint(path)[1]["round"] == 40  # format 1 never covered its metadata
    edit_metadata(path, format_version=True)  # a bool is not the format 1
    with pytest.raises(ck.CheckpointError, match="format_version True; this endofed reads 1 or 2"):
        ck.load_checkpoint(path)


def test_the_hashes_are_no_signature(tmp_path: Path) -> None:
    # What format 2 does not claim: whoever can write the folder can edit a file and recompute both hashes.
    path = ck.save_checkpoint(tmp_path / "f.safetensors", {"w": torch.ones(4)}, {"round": 3})
    forge_metadata(path, round=40)
    assert ck.load_checkpoint(path)[1]["round"] == 40


def test_site_local_state_verify_hash_false_checks_neither_hash(tmp_path: Path) -> None:
    path = ck.save_checkpoint(tmp_path / "mae.safetensors", {"w": torch.ones(4)}, {"round": 2}, content_hash=False)
    meta = ck.read_metadata(path, verify_hash=False)
    assert meta is not None and meta["sha256"] is None and meta["metadata_sha256"] == ck.metadata_sha256(meta)
    edit_metadata(path, round=5)
    assert ck.load_checkpoint(path, verify_hash=False)[1]["round"] == 5
    assert ck.read_metadata(path, verify_hash=False)["round"] == 5  # type: ignore[index]
