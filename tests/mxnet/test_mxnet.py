"""modelseal.integrations.mxnet: verified MXNet/Gluon loaders and the prefix-set seal."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelseal
import mxnet as mx
from conftest import KeyPair
from modelseal.errors import (
    IntegrityError,
    ModelMismatchError,
    SealError,
    SignatureError,
    UnsafeModelError,
    UsageError,
)
from modelseal.integrations import mxnet as mmx
from modelseal.signing.bundle import read_seal
from mxnet import gluon
from race import race

X = mx.nd.array(np.random.RandomState(0).rand(3, 8))


def make_net(seed: int) -> Any:
    """A small hybridized MLP with fixed parameter names, so sets of different seeds swap."""
    mx.random.seed(seed)
    net = gluon.nn.HybridSequential(prefix="net_")
    with net.name_scope():
        net.add(gluon.nn.Dense(16, in_units=8, activation="relu", prefix="d0_"))
        net.add(gluon.nn.Dense(4, in_units=16, prefix="d1_"))
    net.initialize(mx.init.Uniform())
    net.hybridize()
    net(X)
    return net


def out(block: Any) -> Any:
    return block(X).asnumpy()


@dataclass(frozen=True)
class Exported:
    prefix: Path
    expected: Any

    @property
    def directory(self) -> Path:
        return self.prefix.parent

    @property
    def symbol(self) -> Path:
        return self.prefix.with_name("net-symbol.json")

    @property
    def params(self) -> Path:
        return self.prefix.with_name("net-0000.params")

    @property
    def seal(self) -> Path:
        return self.prefix.with_name("net.sig")


@pytest.fixture
def exported(tmp_path: Path, keypair: KeyPair) -> Exported:
    directory = tmp_path / "models"
    directory.mkdir()
    net = make_net(1)
    result = mmx.export(net, directory / "net", key=keypair.private)
    assert result.seal == str(directory / "net.sig")
    return Exported(directory / "net", out(net))


def imports(e: Exported, keypair: KeyPair, **kwargs: Any) -> Any:
    return mmx.symbolblock_imports(
        e.symbol, ["data"], e.params, public_keys=[keypair.public], **kwargs
    )


def checkpoint(e: Exported, keypair: KeyPair, **kwargs: Any) -> Any:
    return mmx.load_checkpoint(e.prefix, 0, public_keys=[keypair.public], **kwargs)


def member_nd_load(e: Exported, keypair: KeyPair, **kwargs: Any) -> Any:
    return mmx.nd_load(e.params, public_keys=[keypair.public], **kwargs)


SET_LOADERS: dict[str, Callable[..., Any]] = {
    "symbolblock_imports": imports,
    "load_checkpoint": checkpoint,
    "nd_load_member": member_nd_load,
}


def flip_byte(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def assert_equal_dicts(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k].asnumpy(), b[k].asnumpy())


# --------------------------------------------------------------------------- same as MXNet


def test_symbolblock_imports_predicts_as_plain(exported: Exported, keypair: KeyPair) -> None:
    ours = imports(exported, keypair)
    plain = gluon.nn.SymbolBlock.imports(str(exported.symbol), ["data"], str(exported.params))
    np.testing.assert_array_equal(out(ours), out(plain))
    np.testing.assert_array_equal(out(ours), exported.expected)


def test_symbolblock_imports_symbol_only(exported: Exported, keypair: KeyPair) -> None:
    ours = mmx.symbolblock_imports(exported.symbol, "data", public_keys=keypair.public)
    plain = gluon.nn.SymbolBlock.imports(str(exported.symbol), "data")
    assert sorted(ours.collect_params()) == sorted(plain.collect_params())


def test_load_checkpoint_as_plain(exported: Exported, keypair: KeyPair) -> None:
    symbol, args, auxs = checkpoint(exported, keypair)
    p_symbol, p_args, p_auxs = mx.model.load_checkpoint(str(exported.prefix), 0)
    assert symbol.tojson() == p_symbol.tojson()
    assert_equal_dicts(args, p_args)
    assert_equal_dicts(auxs, p_auxs)
    module = mx.mod.Module(symbol, data_names=["data"], label_names=None)
    module.bind(data_shapes=[("data", X.shape)], for_training=False)
    module.set_params(args, auxs)
    module.forward(mx.io.DataBatch([X]), is_train=False)
    np.testing.assert_array_equal(module.get_outputs()[0].asnumpy(), exported.expected)


def test_load_parameters_as_plain(tmp_path: Path, keypair: KeyPair) -> None:
    path = tmp_path / "net.params"
    net = make_net(2)
    net.save_parameters(str(path))
    modelseal.seal(path, key=keypair.private)
    ours, plain = make_net(3), make_net(4)
    mmx.load_parameters(ours, path, public_keys=[keypair.public])
    plain.load_parameters(str(path))
    np.testing.assert_array_equal(out(ours), out(plain))
    np.testing.assert_array_equal(out(ours), out(net))


@pytest.mark.parametrize("as_list", [False, True])
def test_nd_load_as_plain(tmp_path: Path, keypair: KeyPair, as_list: bool) -> None:
    path = tmp_path / "arrays.nd"
    arrays = {"a": mx.nd.arange(12).reshape((3, 4)), "b": mx.nd.ones((2,), dtype="float16")}
    mx.nd.save(str(path), list(arrays.values()) if as_list else arrays)
    modelseal.seal(path, key=keypair.private)
    ours = mmx.nd_load(path, public_keys=[keypair.public])
    plain = mx.nd.load(str(path))
    if as_list:
        assert len(ours) == len(plain) == 2
        for a, b in zip(ours, plain, strict=True):
            np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
            assert a.dtype == b.dtype
    else:
        assert_equal_dicts(ours, plain)


def test_set_member_loads_through_prefix_seal(exported: Exported, keypair: KeyPair) -> None:
    plain = mx.nd.load(str(exported.params))
    assert_equal_dicts(member_nd_load(exported, keypair), plain)
    # An explicit signature: routed by what the seal lists.
    found = mmx.nd_load(exported.params, public_keys=[keypair.public], signature=exported.seal)
    assert_equal_dicts(found, plain)


def test_prefix_seal_is_an_oms_seal_of_the_members(exported: Exported, keypair: KeyPair) -> None:
    statement = json.loads(read_seal(exported.seal).envelope.payload)
    assert statement["subject"][0]["name"] == "net"
    resources = [r["name"] for r in statement["predicate"]["resources"]]
    assert resources == ["net-0000.params", "net-symbol.json"]
    assert "net.sig" in statement["predicate"]["serialization"]["ignore_paths"]
    assert mmx.prefix_seal_path(exported.prefix) == exported.seal
    result = mmx.verify_prefix(exported.prefix, public_keys=[keypair.public])
    assert result.files == 2
    assert result.signed


def test_unsigned_prefix_seal(exported: Exported) -> None:
    mmx.seal_prefix(exported.prefix, unsigned=True)
    block = mmx.symbolblock_imports(exported.symbol, ["data"], exported.params, allow_unsigned=True)
    np.testing.assert_array_equal(out(block), exported.expected)


def test_sharded_prefix_seal(exported: Exported, keypair: KeyPair) -> None:
    assert mmx.seal_prefix(exported.prefix, key=keypair.private, shard_size=512).resources > 2
    np.testing.assert_array_equal(out(imports(exported, keypair)), exported.expected)
    flip_byte(exported.params, 700)
    refuse(exported, keypair, "symbolblock_imports", ModelMismatchError, "changed")


def test_checkpoint_with_optimizer_states_is_one_set(tmp_path: Path, keypair: KeyPair) -> None:
    exported_net = make_net(5)
    prefix = tmp_path / "ckpt"
    exported_net.export(str(prefix), epoch=3)
    (tmp_path / "ckpt-0003.states").write_bytes(b"optimizer states")
    assert mmx.seal_prefix(prefix, key=keypair.private).files == 3
    _, args, _ = mmx.load_checkpoint(prefix, 3, public_keys=[keypair.public])
    assert sorted(args) == sorted(mx.model.load_checkpoint(str(prefix), 3)[1])
    flip_byte(tmp_path / "ckpt-0003.states")
    with pytest.raises(ModelMismatchError):
        mmx.load_checkpoint(prefix, 3, public_keys=[keypair.public])


# --------------------------------------------------------------------------- refusals


def refuse(
    e: Exported, keypair: KeyPair, loader: str, error: type[IntegrityError], kind: str
) -> IntegrityError:
    snapshots = e.directory.parent / "snapshots"
    snapshots.mkdir(exist_ok=True)
    with pytest.raises(error) as info:
        SET_LOADERS[loader](e, keypair, snapshot_dir=snapshots)
    assert info.value.failure is not None
    assert kind in {f.kind for f in info.value.failure.findings}, info.value.diagnostics()
    assert list(snapshots.iterdir()) == [], "a snapshot was left behind"
    return info.value


@pytest.mark.parametrize("loader", sorted(SET_LOADERS))
@pytest.mark.parametrize("member", ["net-0000.params", "net-symbol.json"])
def test_changed_member_refused(
    exported: Exported, keypair: KeyPair, loader: str, member: str
) -> None:
    flip_byte(exported.directory / member)
    refuse(exported, keypair, loader, ModelMismatchError, "changed")


@pytest.mark.parametrize("loader", sorted(SET_LOADERS))
@pytest.mark.parametrize("member", ["net-0000.params", "net-symbol.json"])
def test_missing_member_refused(
    exported: Exported, keypair: KeyPair, loader: str, member: str
) -> None:
    (exported.directory / member).unlink()
    refuse(exported, keypair, loader, ModelMismatchError, "missing")


@pytest.mark.parametrize("loader", sorted(SET_LOADERS))
def test_member_swapped_for_another_sealed_models_refused(
    exported: Exported, keypair: KeyPair, tmp_path: Path, loader: str
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    mmx.export(make_net(9), other / "net", key=keypair.private)
    shutil.copyfile(other / "net-0000.params", exported.params)
    refuse(exported, keypair, loader, ModelMismatchError, "changed")


def test_members_swapped_with_each_other_refused(exported: Exported, keypair: KeyPair) -> None:
    swap = exported.directory / "swap"
    os.rename(exported.params, swap)
    os.rename(exported.symbol, exported.params)
    os.rename(swap, exported.symbol)
    refuse(exported, keypair, "symbolblock_imports", ModelMismatchError, "changed")


@pytest.mark.parametrize("loader", sorted(SET_LOADERS))
@pytest.mark.parametrize(
    "claimant",
    ["net-0001.params", "net-12.params", "NET-symbol.json", "net-0000.PARAMS", "net-0000.states"],
)
def test_extra_claimant_refused(
    exported: Exported, keypair: KeyPair, loader: str, claimant: str
) -> None:
    shutil.copyfile(exported.params, exported.directory / claimant)
    error = refuse(exported, keypair, loader, ModelMismatchError, "extra")
    assert error.failure is not None
    assert [f.name for f in error.failure.findings] == [claimant]


def test_unrelated_files_are_ignored(exported: Exported, keypair: KeyPair, tmp_path: Path) -> None:
    d = exported.directory
    (d / "README.md").write_text("notes\n")
    (d / "net-0000.params.bak").write_bytes(b"old")
    (d / "net.json").write_text("{}")
    (d / "network-symbol.json").write_text("{}")
    (d / "sub").mkdir()
    (d / "sub" / "net-0001.params").write_bytes(b"elsewhere")
    (d / "link").symlink_to(tmp_path)
    os.mkfifo(d / "pipe")
    mmx.export(make_net(7), d / "net2", key=keypair.private)
    mmx.export(make_net(8), d / "net-v2", key=keypair.private)
    modelseal.seal(d / "README.md", key=keypair.private)
    for loader in SET_LOADERS.values():
        assert loader(exported, keypair) is not None
    np.testing.assert_array_equal(out(imports(exported, keypair)), exported.expected)


@pytest.mark.parametrize("loader", sorted(SET_LOADERS))
def test_other_key_refused(
    exported: Exported, keypair: KeyPair, other_keypair: KeyPair, loader: str
) -> None:
    with pytest.raises(SignatureError):
        SET_LOADERS[loader](exported, other_keypair)


def test_seal_edited_after_signing_refused(exported: Exported, keypair: KeyPair) -> None:
    bundle = json.loads(exported.seal.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"] = statement["predicate"]["resources"][1:]
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    exported.seal.write_text(json.dumps(bundle))
    for loader in SET_LOADERS:
        with pytest.raises(SignatureError):
            SET_LOADERS[loader](exported, keypair)


@pytest.mark.parametrize("loader", sorted(SET_LOADERS))
def test_unsealed_refused(exported: Exported, keypair: KeyPair, loader: str) -> None:
    exported.seal.unlink()
    with pytest.raises(SealError):
        SET_LOADERS[loader](exported, keypair)


def test_seal_of_another_prefix_refused(exported: Exported, keypair: KeyPair) -> None:
    d = exported.directory
    shutil.copyfile(exported.symbol, d / "copy-symbol.json")
    shutil.copyfile(exported.params, d / "copy-0000.params")
    shutil.copyfile(exported.seal, d / "copy.sig")
    with pytest.raises(SealError, match="not the seal of the exported model"):
        mmx.load_checkpoint(d / "copy", 0, public_keys=[keypair.public])


def test_directory_seal_is_not_a_prefix_seal(exported: Exported, keypair: KeyPair) -> None:
    (exported.directory / "README.md").write_text("notes\n")
    modelseal.seal(exported.directory, key=keypair.private, signature=exported.seal)
    with pytest.raises(SealError, match="not the seal of the exported model"):
        imports(exported, keypair)


def test_epoch_not_in_seal_refused(exported: Exported, keypair: KeyPair) -> None:
    with pytest.raises(SealError, match=r"does not cover net-0001\.params"):
        mmx.load_checkpoint(exported.prefix, 1, public_keys=[keypair.public])


def test_symlinked_member_refused(exported: Exported, keypair: KeyPair, tmp_path: Path) -> None:
    outside = tmp_path / "outside.params"
    os.rename(exported.params, outside)
    exported.params.symlink_to(outside)
    with pytest.raises(UnsafeModelError):
        imports(exported, keypair)


@pytest.mark.parametrize("tamper", ["byte", "other_key", "unsealed"])
def test_single_file_refusals_leave_block_untouched(
    tmp_path: Path, keypair: KeyPair, other_keypair: KeyPair, tamper: str
) -> None:
    path = tmp_path / "net.params"
    make_net(2).save_parameters(str(path))
    modelseal.seal(path, key=keypair.private)
    trusted = keypair.public
    if tamper == "byte":
        flip_byte(path)
    elif tamper == "other_key":
        trusted = other_keypair.public
    else:
        path.with_name("net.params.sig").unlink()
    block = make_net(3)
    before = out(block)
    with pytest.raises(IntegrityError):
        mmx.load_parameters(block, path, public_keys=[trusted])
    with pytest.raises(IntegrityError):
        mmx.nd_load(path, public_keys=[trusted])
    np.testing.assert_array_equal(out(block), before)


def test_failure_is_audited(
    exported: Exported, keypair: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copyfile(exported.params, exported.directory / "net-0001.params")
    with caplog.at_level(logging.INFO, logger="modelseal.audit"), pytest.raises(IntegrityError):
        imports(exported, keypair)
    events = [r.modelseal_event for r in caplog.records if hasattr(r, "modelseal_event")]
    assert events[-1]["outcome"] == "failed"
    assert any("extra net-0001.params" in reason for reason in events[-1]["reasons"])


# --------------------------------------------------------------------------- usage


def test_export_refuses_an_ambiguous_prefix_before_writing(
    tmp_path: Path, keypair: KeyPair
) -> None:
    (tmp_path / "net-0003.params").write_bytes(b"older epoch")
    with pytest.raises(UsageError, match="already claim this prefix"):
        mmx.export(make_net(1), tmp_path / "net", key=keypair.private)
    assert not (tmp_path / "net-symbol.json").exists()
    with pytest.raises(UsageError, match="needs key="):
        mmx.export(make_net(1), tmp_path / "other")


def test_seal_prefix_needs_one_model(tmp_path: Path, keypair: KeyPair) -> None:
    with pytest.raises(UsageError, match="nothing to seal"):
        mmx.seal_prefix(tmp_path / "net", key=keypair.private)
    make_net(1).export(str(tmp_path / "net"), epoch=0)
    make_net(1).export(str(tmp_path / "net"), epoch=1)
    with pytest.raises(UsageError, match=r"exactly one net-NNNN\.params"):
        mmx.seal_prefix(tmp_path / "net", key=keypair.private)


def test_loader_usage_errors(exported: Exported, keypair: KeyPair, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not an exported symbol file"):
        mmx.symbolblock_imports(tmp_path / "model.json", ["data"], public_keys=keypair.public)
    with pytest.raises(UsageError, match="not a parameter file"):
        mmx.symbolblock_imports(
            exported.symbol, ["data"], tmp_path / "net-0000.params", public_keys=keypair.public
        )
    with pytest.raises(UsageError, match="no trusted public key"):
        mmx.load_checkpoint(exported.prefix, 0)
    with pytest.raises(UsageError, match="not both"):
        mmx.load_checkpoint(exported.prefix, 0, public_keys=keypair.public, allow_unsigned=True)
    with pytest.raises(UsageError, match="is a directory"):
        mmx.nd_load(exported.directory, public_keys=keypair.public)
    with pytest.raises(UsageError, match="not a model prefix"):
        mmx.load_checkpoint(str(exported.directory) + "/", 0, public_keys=keypair.public)


def test_import_does_not_load_mxnet() -> None:
    code = (
        "import sys, modelseal.integrations.mxnet, modelseal.integrations.gluoncv\n"
        "assert 'mxnet' not in sys.modules and 'gluoncv' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


UPSTREAM = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "model_signing"


@pytest.mark.interop
@pytest.mark.skipif(not UPSTREAM.exists(), reason="upstream model_signing is in the main venv")
def test_upstream_verifies_a_prefix_seal(exported: Exported, keypair: KeyPair) -> None:
    (exported.directory / "README.md").write_text("unrelated\n")

    def upstream(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [str(UPSTREAM), "verify", "key", str(exported.directory)]
        command += ["--signature", str(exported.seal), "--public_key", str(keypair.public)]
        return subprocess.run(
            [*command, *extra], capture_output=True, text=True, check=False, timeout=120
        )

    ok = upstream("--ignore_unsigned_files")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Without the flag upstream wants the whole directory: unrelated files are extras.
    assert upstream().returncode != 0
    flip_byte(exported.params)
    assert upstream("--ignore_unsigned_files").returncode != 0


# --------------------------------------------------------------------------- swap races


def test_nd_load_swap_race(tmp_path: Path, keypair: KeyPair) -> None:
    model = tmp_path / "model"
    model.mkdir()
    target = model / "weights.params"
    honest_arrays = {"w": mx.nd.arange(64).reshape((8, 8))}
    mx.nd.save(str(target), honest_arrays)
    modelseal.seal(target, key=keypair.private)
    honest, evil = tmp_path / "honest.params", tmp_path / "evil.params"
    os.link(target, honest)
    mx.nd.save(str(evil), {"w": -mx.nd.arange(64).reshape((8, 8))})

    def is_honest(loaded: object) -> bool:
        assert isinstance(loaded, dict)
        return bool((loaded["w"] == honest_arrays["w"]).asnumpy().all())

    result = race(
        target,
        honest,
        evil,
        lambda: mmx.nd_load(target, public_keys=[keypair.public]),
        is_honest,
        attempts=300,
    )
    assert result.loads + result.refused == 300


def test_symbolblock_imports_swap_race(
    exported: Exported, keypair: KeyPair, tmp_path: Path
) -> None:
    honest, evil = tmp_path / "honest.params", tmp_path / "evil.params"
    os.link(exported.params, honest)
    loaded = mx.nd.load(str(exported.params))
    mx.nd.save(str(evil), {k: v * 3 + 1 for k, v in loaded.items()})

    def is_honest(block: object) -> bool:
        return bool(np.array_equal(out(block), exported.expected))

    result = race(
        exported.params,
        honest,
        evil,
        lambda: imports(exported, keypair),
        is_honest,
        attempts=200,
    )
    assert result.loads + result.refused == 200


def test_prefix_sets_follow_the_policy(
    exported: Exported, keypair: KeyPair, tmp_path: Path
) -> None:
    from conftest import policy_file
    from modelseal.policy import Policy, PolicyViolation

    allow = Policy.load(policy_file(tmp_path / "allow.toml", keypair.public))
    deny = Policy.load(policy_file(tmp_path / "deny.toml", keypair.public, "fraud-*"))
    ours = mmx.symbolblock_imports(exported.symbol, ["data"], exported.params, policy=allow)
    np.testing.assert_array_equal(out(ours), exported.expected)
    with pytest.raises(PolicyViolation):
        mmx.symbolblock_imports(exported.symbol, ["data"], exported.params, policy=deny)


# --------------------------------------------------------------------------- emergency escape


@pytest.mark.parametrize("loader", sorted(SET_LOADERS))
def test_unsafe_skip_loads_a_changed_set_and_logs_critical(
    exported: Exported,
    keypair: KeyPair,
    loader: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = make_net(2)
    mmx.export(other, exported.directory / "other", key=keypair.private)
    (exported.directory / "other-0000.params").replace(exported.params)  # swapped weights
    refuse(exported, keypair, loader, ModelMismatchError, "changed")
    monkeypatch.setenv("MODELSEAL_UNSAFE_SKIP", "1")
    caplog.set_level(logging.INFO, logger="modelseal.audit")
    assert SET_LOADERS[loader](exported, keypair) is not None
    skipped = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(skipped) == 1
    assert skipped[0].modelseal_event["outcome"] == "skipped-unsafe"  # type: ignore[attr-defined]


def test_expected_model_name_is_checked_for_prefix_sets(
    exported: Exported, keypair: KeyPair
) -> None:
    with pytest.raises(SealError, match="not the expected 'fraud-v3'"):
        imports(exported, keypair, model_name="fraud-v3")
    sealed_name = read_seal_name(exported.seal)
    assert imports(exported, keypair, model_name=sealed_name) is not None


def read_seal_name(seal: Path) -> str:
    from modelseal.verification import check_bundle

    manifest, _ = check_bundle(read_seal(seal), (), allow_unsigned=True)
    return manifest.model_name


def test_export_records_the_given_name(tmp_path: Path, keypair: KeyPair) -> None:
    result = mmx.export(make_net(3), tmp_path / "net", key=keypair.private, name="fraud-v3")
    assert result.model_name == "fraud-v3"
    assert read_seal_name(tmp_path / "net.sig") == "fraud-v3"
    block = mmx.symbolblock_imports(
        tmp_path / "net-symbol.json",
        ["data"],
        tmp_path / "net-0000.params",
        public_keys=[keypair.public],
        model_name="fraud-v3",
    )
    assert block is not None
