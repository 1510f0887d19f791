"""A malformed suite file gives one line naming the file, the field and the fix, and exit code 2."""

import pytest

from robustbench_cnn.cli import main
from robustbench_cnn.errors import SuiteError
from robustbench_cnn.suite.load import load_suite

BASE = """
name = "bad"
[[models]]
name = "a"
arch = "simple_cnn"
"""


def write(tmp_path, text):
    path = tmp_path / "suite.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            BASE + '[[models]]\nname = "b"\narch = "mobilenet"\n',
            "models[1].arch: unknown model 'mobilenet'; did you mean 'mobilenet_v2'?",
        ),
        (
            BASE + '[[evaluations]]\nattack = "pgdd"\neps = [0.1]\n',
            "evaluations[0].attack: unknown attack 'pgdd'; did you mean 'pgd'?",
        ),
        (BASE + '[[evaluations]]\nattack = "pgd"\neps = [0.1, 8]\n', "eps[1] = 8.0 is out of range for linf"),
        (BASE + '[[evaluations]]\nattack = "pgd"\neps = [-0.1]\n', "must be a finite number >= 0"),
        (
            BASE + '[[evaluations]]\nattack = "fgsm"\nnorm = "l2"\neps = [0.1]\n',
            "attack 'fgsm' supports norm linf, not 'l2'",
        ),
        (BASE + '[[evaluations]]\nattack = "pgd"\neps = ["8/0"]\n', "is not a number or a fraction"),
        (BASE + "params = { widht = 3 }\n", "unknown parameter 'widht' for arch 'simple_cnn'; did you mean 'width'?"),
        (BASE + "epocs = 3\n", "models[0].epocs: unknown key"),
        (BASE + '[dataset]\nname = "cifar100"\n', "dataset.name: unknown dataset 'cifar100'; did you mean 'cifar10'?"),
        (BASE + '[[models]]\nname = "a"\narch = "resnet"\n', "model name 'a' is used twice"),
        ('name = "x"\n', "models: required field is missing"),
        ("seed = 'one'\n" + BASE, "seed: Input should be a valid integer"),
        (BASE + "[[models]\n", "invalid TOML"),
    ],
)
def test_bad_suite_names_the_problem(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_fractions_are_parsed_exactly(tmp_path):
    loaded = load_suite(write(tmp_path, BASE + '[[evaluations]]\nattack = "pgd"\neps = ["8/255", 0.5]\n'))
    assert loaded.spec.evaluations[0].eps == (8 / 255, 0.5)


def test_cli_exits_2_with_one_line(tmp_path, capsys):
    path = write(tmp_path, BASE + '[[models]]\nname = "b"\narch = "mobilenet"\n')
    code = main(["run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0
    assert err.startswith("robustbench-cnn: error: ") and "did you mean 'mobilenet_v2'" in err
    assert not (tmp_path / "out").exists()


def test_missing_file_is_exit_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read suite file" in capsys.readouterr().err


def test_shipped_suites_are_valid():
    from pathlib import Path

    for path in (Path(__file__).resolve().parents[1] / "suites").glob("*.toml"):
        load_suite(path)
