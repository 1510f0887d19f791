"""Checkpoints users have: torch.save state dicts of bare networks, safetensors, and hostile files."""

import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from robustbench_cnn.errors import CheckpointError
from robustbench_cnn.models import build_model
from robustbench_cnn.models.checkpoint import load_checkpoint


def tv_model(seed=0):
    torch.manual_seed(seed)
    return build_model("torchvision:shufflenet_v2_x0_5", 10, 1, [0.5], [0.25]).eval()


def bare_net(seed=1):
    """A user's own torchvision network (ShuffleNetV2 x0.5), trained outside the suite: no normalization wrapper."""
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10)
    net.conv1[0] = nn.Conv2d(1, 24, 3, 2, 1, bias=False)
    return net.eval()


def test_torch_save_state_dict_of_a_bare_torchvision_model_loads(tmp_path):
    net = bare_net()
    torch.save(net.state_dict(), tmp_path / "mine.pt")
    model = tv_model()
    load_checkpoint(model, tmp_path / "mine.pt")  # auto: no 'net.' keys -> a bare network
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(model(x), net((x - 0.5) / 0.25), atol=1e-5)
    assert model.mean.item() == 0.5 and model.std.item() == 0.25  # from the dataset, not the file


@pytest.mark.parametrize("wrap", [lambda sd: {"state_dict": sd}, lambda sd: {f"module.{k}": v for k, v in sd.items()}])
def test_common_checkpoint_wrappers_are_unwrapped(tmp_path, wrap):
    net = bare_net()
    torch.save(wrap(net.state_dict()), tmp_path / "mine.pt")
    model = tv_model()
    load_checkpoint(model, tmp_path / "mine.pt", "net")
    assert torch.equal(model.net.fc.weight, net.fc.weight)


def test_bare_state_dict_as_safetensors_and_a_wrapped_torch_save(tmp_path):
    net = bare_net()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "bare.safetensors")
    model = tv_model()
    load_checkpoint(model, tmp_path / "bare.safetensors")
    assert torch.equal(model.net.conv1[0].weight, net.conv1[0].weight)
    torch.save(model.state_dict(), tmp_path / "wrapped.pt")
    other = tv_model(seed=5)
    load_checkpoint(other, tmp_path / "wrapped.pt", "wrapped")
    assert torch.equal(other.net.conv1[0].weight, net.conv1[0].weight)


def test_wrong_format_names_missing_and_unexpected_keys_in_one_line(tmp_path):
    torch.save(bare_net().state_dict(), tmp_path / "mine.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tv_model(), tmp_path / "mine.pt", "wrapped")
    msg = str(info.value)
    assert "\n" not in msg and "missing key(s) (mean, net.conv1.0.weight" in msg and "unexpected (conv1.0.weight" in msg
    assert "checkpoint_format = 'net'" in msg and str(tmp_path / "mine.pt") in msg


class _Payload:
    """Unpickling this would create a marker file (a stand-in for arbitrary code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_a_code_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    torch.save({"conv1.weight": torch.zeros(1), "evil": _Payload(marker)}, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused \\(never unpickled\\)") as info:
        load_checkpoint(tv_model(), tmp_path / "evil.pt")
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_nan_weights_are_refused(tmp_path):
    state = bare_net().state_dict()
    state["fc.weight"] = torch.full_like(state["fc.weight"], float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="fc.weight holds NaN or infinite values"):
        load_checkpoint(tv_model(), tmp_path / "nan.pt")


def test_integer_weights_are_refused(tmp_path):
    state = {k: v.to(torch.int32) if v.is_floating_point() else v for k, v in bare_net().state_dict().items()}
    torch.save(state, tmp_path / "int.pt")
    with pytest.raises(CheckpointError, match="has dtype torch.int32"):
        load_checkpoint(tv_model(), tmp_path / "int.pt")


def test_torch_export_archives_directories_and_junk_are_one_line_errors(tmp_path):
    small = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    torch.export.save(torch.export.export(small, (torch.zeros(1, 4),)), tmp_path / "m.pt2")
    (tmp_path / "dir.pt").mkdir()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    expected = {"m.pt2": "torch.export archive", "dir.pt": "is not a file", "junk.pt": "neither safetensors"}
    for name, match in expected.items():
        with pytest.raises(CheckpointError, match=match) as info:
            load_checkpoint(tv_model(), tmp_path / name)
        assert "\n" not in str(info.value)
