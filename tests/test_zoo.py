"""The local model zoo: every entry's architecture loads its published file and reproduces its published
clean accuracy; a zoo file is identified by its sha256; zoo models in suites, on the wrong dataset, or
without their folder; bare-network checkpoints must declare their preprocessing.

Needs ``../shared/zoo`` (the published files are never part of this repository): skipped without it."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_cnn.cli.main import main
from robustbench_cnn.config.spec import DatasetSpec
from robustbench_cnn.data import load_dataset
from robustbench_cnn.models import build_model
from robustbench_cnn.models.checkpoint import load_checkpoint
from robustbench_cnn.zoo import ZOO, ZooError, locate

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "zoo"
needs_zoo = pytest.mark.skipif(not (SHARED / "SHA256SUMS").is_file(), reason=f"no published zoo at {SHARED} "
                               "(a user's clone has none; CI and the developers' machines do)")  # fmt: skip
CIFAR_NPZ = "cifar10-test-first100/cifar10_test_first100.npz"
TORCH_ENTRIES = [e for e in ZOO.values() if e.kind == "torch"]


@pytest.fixture(scope="module")
def mnist():
    return load_dataset(DatasetSpec(name="mnist"), SHARED / "data")


@pytest.fixture(scope="module")
def cifar100():
    return load_dataset(DatasetSpec(name="npz", path=CIFAR_NPZ, num_classes=10), SHARED / "data")


def _clean(entry, data) -> tuple[float, int]:
    mean, std = entry.preprocess.on_unit_images()
    model = build_model(entry.arch, 10, data.in_channels, mean, std, dict(entry.params), image_size=data.image_size)
    load_checkpoint(model, locate(entry.name, SHARED), "net")
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1) for x in data.x_eval.split(1000)])
    return float((pred == data.y_eval).float().mean()), len(pred)


def test_every_entry_names_a_file_pinned_by_the_shared_sums():
    if not (SHARED / "SHA256SUMS").is_file():
        pytest.skip(f"no published zoo at {SHARED}")
    sums = dict(reversed(line.split()) for line in (SHARED / "SHA256SUMS").read_text().splitlines() if line.strip())
    for e in ZOO.values():
        assert sums[f"./models/{e.file}"] == e.sha256, e.name


@needs_zoo
@pytest.mark.parametrize("entry", TORCH_ENTRIES, ids=[e.name for e in TORCH_ENTRIES])
def test_each_torch_entry_reproduces_its_published_clean_accuracy(entry, request):
    """MNIST: the full 10,000-image test set, within 0.2 pt. CIFAR-10: the 100 lossless test images,
    whose 95% interval must contain the published figure."""
    from robustbench_cnn.metrics import clopper_pearson

    data = request.getfixturevalue("mnist" if entry.dataset == "mnist" else "cifar100")
    acc, n = _clean(entry, data)
    published = next(f.value for f in entry.figures if f.kind == "clean")
    if entry.dataset == "mnist":
        assert n == 10_000 and abs(acc - published) <= 0.002, (entry.name, acc, published)
    else:
        low, high = clopper_pearson(acc, n)
        assert low <= published <= high, (entry.name, acc, published)


@needs_zoo
def test_a_zoo_file_that_is_not_the_published_one_is_refused(tmp_path):
    e = ZOO["wong_kolter_convex"]
    data = bytearray((SHARED / "models" / e.file).read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / e.file).write_bytes(bytes(data))
    with pytest.raises(ZooError, match="sha256 .* not the published"):
        locate(e.name, tmp_path)
    with pytest.raises(ZooError, match="--zoo-dir"):
        locate(e.name, None)


MNIST_SUITE = """
name = "zoo-mini"
device = "cpu"
[dataset]
name = "mnist"
eval_size = {eval_size}
[[models]]
name = "wk"
checkpoint = "zoo:{zoo}"
{extra}
[[evaluations]]
attack = "pgd"
eps = [0.1]
steps = 10
[ensemble]
members = ["apgd_ce"]
steps = 10
restarts = 1
eval_size = {ensemble_size}
[checks]
enabled = false
[latency]
enabled = false
"""


def _suite(tmp_path: Path, extra: str = "", eval_size: int = 300, ensemble_size: int = 100,
           zoo: str = "wong_kolter_convex") -> Path:  # fmt: skip
    path = tmp_path / "zoo-mini.toml"
    path.write_text(MNIST_SUITE.format(extra=textwrap.dedent(extra), eval_size=eval_size, ensemble_size=ensemble_size,
                                       zoo=zoo))  # fmt: skip
    return path


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["run", *args, "--no-progress", "--no-report"])
    out, err = capsys.readouterr()
    return code, out, err


@needs_zoo
def test_a_zoo_suite_reports_published_vs_measured(tmp_path, capsys):
    out = tmp_path / "out"
    code, text, err = _run(capsys, str(_suite(tmp_path)), "--data-dir", str(SHARED / "data"), "--zoo-dir",
                           str(SHARED), "--out", str(out))  # fmt: skip
    assert code == 0, err
    assert "reproduction (published -> measured %, images)" in text
    assert "reliable    wk" in text and "warning" not in text  # honest: not flagged
    summary = next(out.glob("zoo-mini/*/summary.md")).read_text()
    assert "## Reproduction of published figures" in summary
    line = next(row for row in summary.splitlines() if row.startswith("| wk | clean |"))
    assert "98.20" in line  # published
    import pandas as pd

    df = pd.read_csv(next(out.glob("zoo-mini/*/results.csv")))
    worst = df[(df.attack == "worst_case")]
    assert list(worst.n) == [100]  # the ensemble's seeded subset
    manifest = json.loads(next(out.glob("zoo-mini/*/manifest.json")).read_text())
    assert manifest["models"]["wk"]["weights_sha256"] == ZOO["wong_kolter_convex"].sha256
    math = manifest["environment"]["math"]  # what tells two x86 machines' trained weights apart
    assert math["torch_cpu_capability"] and math["onednn"].startswith("v") and "env" in math
    assert worst.value.item() >= 0.942 - 0.06  # certified 94.2% (100 images: a wide interval)


@needs_zoo
def test_wrong_preprocessing_is_flagged_by_the_published_clean_accuracy(tmp_path, capsys):
    """TRADES' SmallCNN behind MNIST's mean/std instead of raw pixels (the bug that read published robust
    models as 0% robust): clean 97% against the published 99.48% makes the model UNRELIABLE, and the
    reproduction table says why."""
    suite = _suite(tmp_path, 'preprocess = "dataset"', eval_size=1000, zoo="trades_smallcnn")
    code, text, err = _run(capsys, str(suite), "--data-dir", str(SHARED / "data"), "--zoo-dir", str(SHARED),
                           "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 0, err
    assert "UNRELIABLE  wk" in text and "failed published_clean" in text
    assert "warning: wk: wrong preprocessing or checkpoint? clean accuracy 97" in text


@needs_zoo
@pytest.mark.parametrize(
    ("extra", "args", "expected"),
    [
        ("", ["--zoo-dir", "{bad}"], "sha256"),
        ("", [], "needs the zoo folder: pass --zoo-dir"),
        ('checkpoint = "zoo:wong_kolter"', ["--zoo-dir", "{zoo}"], "did you mean 'wong_kolter_convex'"),
    ],
    ids=["sha256-differs", "no-zoo-dir", "unknown-name"],
)
def test_zoo_input_problems_are_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, extra, args, expected):
    monkeypatch.delenv("ROBUSTBENCH_CNN_ZOO", raising=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    e = ZOO["wong_kolter_convex"]
    (bad / e.file).write_bytes((SHARED / "models" / e.file).read_bytes() + b"\0")
    text = MNIST_SUITE.format(extra="", eval_size=10, ensemble_size=10, zoo="wong_kolter_convex")
    if extra:
        text = text.replace('checkpoint = "zoo:wong_kolter_convex"', extra)
    suite = tmp_path / "s.toml"
    suite.write_text(text)
    args = [a.format(bad=bad, zoo=SHARED) for a in args]
    out = tmp_path / "out"
    code, _, err = _run(capsys, str(suite), "--data-dir", str(SHARED / "data"), *args, "--out", str(out))
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@needs_zoo
def test_a_zoo_model_on_the_wrong_dataset_is_refused(tmp_path, capsys):
    suite = tmp_path / "s.toml"
    text = MNIST_SUITE.format(extra="", eval_size=10, ensemble_size=10, zoo="wong_kolter_convex")
    suite.write_text(text.replace('name = "mnist"', 'name = "cifar10"'))
    code, _, err = _run(capsys, str(suite), "--zoo-dir", str(SHARED), "--out", str(tmp_path / "out"))
    assert code == 2 and "published on mnist, not cifar10" in err and len(err.strip().splitlines()) == 1


def test_a_bare_network_checkpoint_must_declare_its_preprocessing(tmp_path, capsys):
    """Both when the suite says checkpoint_format = 'net' and when 'auto' finds a bare state dict."""
    from robustbench_cnn.models import MODELS

    torch.save(MODELS.get("convex_small_mnist")(10, 1, image_size=8).state_dict(), tmp_path / "bare.pt")
    for fmt in ('checkpoint_format = "net"', ""):
        suite = tmp_path / "bare.toml"
        suite.write_text(
            textwrap.dedent(f"""
            name = "bare"
            device = "cpu"
            [dataset]
            name = "digits"
            eval_size = 10
            [[models]]
            name = "m"
            arch = "convex_small_mnist"
            params = {{ image_size = 8 }}
            checkpoint = "bare.pt"
            {fmt}
        """)
        )
        code, _, err = _run(capsys, str(suite), "--out", str(tmp_path / "out"))
        assert code == 2 and "models[0].preprocess" in err and "preprocess = 'none'" in err, err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
        suite.write_text(suite.read_text() + 'preprocess = "none"\n')
        assert main(["plan", str(suite), "--out", str(tmp_path / "out")]) == 0


def test_mnist_reads_gzipped_and_plain_idx_files_and_a_test_only_folder(tmp_path):
    """The official .gz files as downloaded by hand, torchvision's un-gzipped copies, and a folder
    holding only the test split (an empty training split) give the same test images."""
    import gzip

    if not (SHARED / "data" / "MNIST").is_dir():
        pytest.skip(f"no MNIST at {SHARED / 'data'}")
    gz = load_dataset(DatasetSpec(name="mnist"), SHARED / "data")
    assert (len(gz.y_train), len(gz.y_eval)) == (60_000, 10_000) and gz.x_eval.shape[1:] == (1, 28, 28)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(SHARED / "data" / "MNIST" / "raw" / f"{name}.gz") as fh:
            (tmp_path / name).write_bytes(fh.read())
    plain = load_dataset(DatasetSpec(name="mnist"), tmp_path)
    assert len(plain.y_train) == 0 and torch.equal(plain.x_eval, gz.x_eval) and torch.equal(plain.y_eval, gz.y_eval)
    from robustbench_cnn.data import DatasetError

    with pytest.raises(DatasetError, match="no training split"):
        _ = plain.mean
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01" + b"\0" * 8)
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        load_dataset(DatasetSpec(name="mnist"), tmp_path)


def test_npz_datasets_refuse_object_arrays_and_bad_shapes(tmp_path):
    from robustbench_cnn.data import DatasetError

    x = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "ok.npz", x=x, y=np.arange(6) % 3)
    ds = load_dataset(DatasetSpec(name="npz", path="ok.npz", num_classes=10), tmp_path)
    assert ds.x_eval.shape == (6, 3, 8, 8) and ds.num_classes == 10 and len(ds.y_train) == 0
    assert torch.equal(ds.x_eval[0, :, 1, 2], torch.from_numpy(x[0, 1, 2]).float() / 255)
    np.savez(tmp_path / "obj.npz", x=np.array([x, None], dtype=object), y=np.arange(2))
    np.savez(tmp_path / "float.npz", x=x.astype(np.float32), y=np.arange(6))
    np.savez(tmp_path / "short.npz", x=x, y=np.arange(5))
    for name, message in (("obj", "object arrays"), ("float", "uint8"), ("short", "labels"), ("none", "no such")):
        with pytest.raises(DatasetError, match=message):
            load_dataset(DatasetSpec(name="npz", path=f"{name}.npz"), tmp_path)


@needs_zoo
def test_evaluate_takes_zoo_names_data_dir_and_preprocess(tmp_path):
    from robustbench_cnn.api import evaluate

    df = evaluate("zoo:wong_kolter_convex", data_dir=SHARED / "data", zoo_dir=SHARED, attacks=("fgsm",), eps=(0.1,),
                  eval_size=500, device="cpu")  # fmt: skip
    clean = df[df.metric == "clean_acc"].value.item()
    assert df.model.iloc[0] == "wong_kolter_convex" and clean > 0.95
    e = ZOO["wong_kolter_convex"]
    from robustbench_cnn.models import MODELS

    net = MODELS.get(e.arch)(10, 1)
    state = torch.load(SHARED / "models" / e.file, weights_only=True, map_location="cpu")
    net.load_state_dict(state)
    raw = evaluate(net, "mnist", data_dir=SHARED / "data", preprocess="none", attacks=("fgsm",), eps=(0.1,),
                   eval_size=500, device="cpu")  # fmt: skip
    assert raw[raw.metric == "clean_acc"].value.item() == clean
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_published_clean_and_certified_bound_checks_fire_and_stay_silent():
    """check_published_clean: 97.2% on 1,000 images against TRADES' published 99.48% fires, 99.4% does
    not; check_certified_bound: a worst case of 90% on 1,000 images under Wong & Kolter's certified
    94.2% at eps 0.1 fires, 94% does not (inside its interval), and other budgets have no bound."""
    from robustbench_cnn.measures.attack import certified_bound_check
    from robustbench_cnn.measures.clean import published_clean_check

    assert published_clean_check("trades_smallcnn", 0.972, 1000)[0] is False
    assert published_clean_check("trades_smallcnn", 0.994, 1000)[0] is True
    assert published_clean_check(None, 0.5, 1000) is None
    assert certified_bound_check("wong_kolter_convex", "linf", 0.1, 0.90, 1000)[0] is False
    assert certified_bound_check("wong_kolter_convex", "linf", 0.1, 0.94, 1000)[0] is True
    assert certified_bound_check("wong_kolter_convex", "linf", 0.3, 0.0, 1000) is None
    assert certified_bound_check("trades_smallcnn", "linf", 0.3, 0.0, 1000) is None


def test_reproduction_verdicts():
    """reproduced (inside the interval), differs, stronger attack (a worst case below a published attack),
    impossible (below a certified bound) and consistent, from rows and the manifest's zoo names."""
    import pandas as pd

    from robustbench_cnn.metrics import clopper_pearson
    from robustbench_cnn.report.reproduction import reproduction, warnings

    def row(model, metric, value, attack=None, eps=None, n=10_000):
        low, high = clopper_pearson(value, n)
        return {"model": model, "format": "torch", "metric": metric, "attack": attack, "norm": "linf" if eps else None,
                "eps": eps, "value": value, "n": n, "ci_low": low, "ci_high": high}  # fmt: skip

    df = pd.DataFrame([
        row("lenet", "clean_acc", 0.9864), row("lenet", "robust_acc", 0.9324, "bim", 0.3),
        row("lenet", "robust_acc", 0.904, "worst_case", 0.3, 1000),
        row("wk", "clean_acc", 0.95), row("wk", "robust_acc", 0.90, "worst_case", 0.1),
        row("wk", "robust_acc", 0.9596, "pgd", 0.1),
    ])  # fmt: skip
    manifest = {"models": {"lenet": {"zoo": "advertorch_lenet5_pgd"}, "wk": {"zoo": "wong_kolter_convex"},
                           "own": {"source": "cache"}}}  # fmt: skip
    table = reproduction(df, manifest).set_index(["model", "figure"]).verdict
    assert table["lenet", "clean"] == "reproduced"
    assert table["lenet", "PGD-40 (advertorch) @ linf 0.3"] == "reproduced"
    assert table["lenet", "worst case vs PGD-40 (advertorch) @ linf 0.3"] == "stronger attack"
    assert table["wk", "clean"] == "differs"
    assert table["wk", "FGSM @ linf 0.1"] == "not measured"
    assert table["wk", "PGD @ linf 0.1"] == "reproduced"
    assert table["wk", "certified @ linf 0.1 (certified lower bound)"] == "impossible"
    assert "own" not in table.index.get_level_values(0)
    text = " ".join(warnings(reproduction(df, manifest)))
    assert "wk: wrong preprocessing or checkpoint?" in text and "wk: an evaluation or loading bug" in text
    assert "lenet" not in text


CIFAR_SUITE = """
name = "cifar-mini"
device = "cpu"
[dataset]
name = "npz"
path = "cifar10-test-first100/cifar10_test_first100.npz"
num_classes = 10
[[models]]
name = "resnet20"
checkpoint = "zoo:cifar10_resnet20"
[[evaluations]]
attack = "fgsm"
eps = ["1/255"]
[ensemble]
enabled = false
[checks]
enabled = false
[latency]
enabled = false
"""


@needs_zoo
def test_a_cifar_zoo_resnet_on_the_100_lossless_images_is_reliable_and_reproduced(tmp_path, capsys):
    """The published ResNet-20 (option-A shortcuts, ImageNet statistics) through a suite on the 100
    lossless CIFAR-10 test images: the interval of its clean accuracy contains the published 91.73%."""
    suite = tmp_path / "cifar.toml"
    suite.write_text(CIFAR_SUITE)
    code, text, err = _run(capsys, str(suite), "--data-dir", str(SHARED / "data"), "--zoo-dir", str(SHARED),
                           "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 0, err
    assert "reliable    resnet20" in text and "reproduced      resnet20: clean: 91.73 -> 94.00 (100)" in text


@needs_zoo
def test_the_mlperf_tiny_int8_artifact_is_measured_on_litert(tmp_path, capsys):
    """The edge-only ResNet-8 (int8 in, int8 out, raw 0..255 RGB) on the 100 lossless images: clean
    accuracy whose interval contains the 85% quality target, batch-1 latency, size and a direct Square
    Attack row, all from the interpreter; a torch entry is refused."""
    import pandas as pd

    args = ["zoo", "measure", "mlperf_tiny_resnet8_int8", "--data-dir", str(SHARED / "data"), "--zoo-dir", str(SHARED),
            "--dataset", "npz", "--data-path", CIFAR_NPZ, "--eps", "8/255", "--queries", "20", "--attack-size", "20",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "reproduced      mlperf_tiny_resnet8_int8: clean: 85.00 ->" in text
    df = pd.read_csv(next(tmp_path.glob("zoo-mlperf_tiny_resnet8_int8/*/results.csv")))
    rows = df.set_index("metric")
    assert set(df.format) == {"tflite"} and set(df.compression) == {"int8"}
    assert rows.loc["latency_ms_p50", "batch_size"] == 1 and rows.loc["latency_ms_p50", "value"] > 0
    assert rows.loc["robust_acc", "attack"] == "square_direct" and rows.loc["robust_acc", "n"] == 20
    assert rows.loc["robust_acc", "value"] <= rows.loc["clean_acc", "value"]
    assert main(["zoo", "measure", "trades_smallcnn", "--zoo-dir", str(SHARED), "--out", str(tmp_path)]) == 2
