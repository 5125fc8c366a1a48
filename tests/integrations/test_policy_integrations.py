"""`policy=` through the framework integrations: the policy decides, the bytes stay verified."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import KeyPair, policy_file
from modelseal.errors import UsageError
from modelseal.integrations import onnx as monnx
from modelseal.integrations import safetensors as mst
from modelseal.integrations import torch as mtorch
from modelseal.policy import Policy, PolicyViolation


def test_torch_and_safetensors_follow_the_policy(tmp_path: Path, keypair: KeyPair) -> None:
    state = {"w": torch.arange(6.0)}
    mtorch.save(state, tmp_path / "model.pt", key=keypair.private)
    mst.save_file(state, tmp_path / "model.safetensors", key=keypair.private)
    allow = Policy.load(policy_file(tmp_path / "allow.toml", keypair.public))
    deny = Policy.load(policy_file(tmp_path / "deny.toml", keypair.public, "fraud-*"))
    assert torch.equal(mtorch.load(tmp_path / "model.pt", policy=allow)["w"], state["w"])
    assert torch.equal(mst.load_file(tmp_path / "model.safetensors", policy=allow)["w"], state["w"])
    with pytest.raises(PolicyViolation, match=r"model\.pt"):
        mtorch.load(tmp_path / "model.pt", policy=deny)
    with pytest.raises(PolicyViolation):
        mst.load_file(tmp_path / "model.safetensors", policy=deny)
    with pytest.raises(UsageError, match="not both"):
        mtorch.load(tmp_path / "model.pt", policy=allow, public_keys=keypair.public)


def test_onnx_follows_the_policy(tmp_path: Path, keypair: KeyPair) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    monnx.onnx_save(model, tmp_path / "id.onnx", key=keypair.private)
    allow = Policy.load(policy_file(tmp_path / "allow.toml", keypair.public))
    deny = Policy.load(policy_file(tmp_path / "deny.toml", keypair.public, "fraud-*"))
    assert monnx.onnx_load(tmp_path / "id.onnx", policy=allow).graph.name == "g"
    with pytest.raises(PolicyViolation):
        monnx.inference_session(tmp_path / "id.onnx", policy=deny)
