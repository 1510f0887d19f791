"""A malformed suite file gives one line naming the file, the field and the fix, and exit code 2."""

import pytest

from robustbench_cnn.cli.main import main
from robustbench_cnn.config.load import load_suite
from robustbench_cnn.errors import SuiteError

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
    """Every shipped suite validates; the zoo suites need the zoo folder, and say so in one line each."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    zoo = root.parent / "shared" / "zoo"
    for path in (root / "suites").glob("*.toml"):
        if "zoo:" not in path.read_text():
            load_suite(path)
            continue
        with pytest.raises(SuiteError, match="needs the zoo folder: pass --zoo-dir"):
            load_suite(path)
        if zoo.is_dir():
            load_suite(path, zoo)


# Mutation-fuzzing regressions (issue #15): each crashed, was accepted, or broke the one-line rule.
# ``{dir}`` stands for the suite file's folder.
REGRESSIONS = [
    ('name = "bad"\n[[models]]\nname = ["a"]\narch = "simple_cnn"\n',
     ["models[0].name: Input should be a valid string; got an array"]),
    (BASE + "defense = { name = 1 }\n",
     ["models[0].defense: a defense's 'name' is a string, e.g. { name = \"pgd_at\", eps = 0.1 }"]),
    (BASE + 'defense = { name = ["pgd_at"] }\n',
     ["models[0].defense: a defense's 'name' is a string, e.g. { name = \"pgd_at\", eps = 0.1 }"]),
    (BASE + '[[models]]\nname = "b"\ncompress = { name = "prune", source = ["a"] }\n',
     ["models[1].arch: required field is missing",
      "models[1].compress: prune.source: Input should be a valid string; got an array"]),
    (BASE + 'params = "x"\n', ["models[0].params: Input should be a valid dictionary; got the string 'x'"]),
    (BASE + '[[evaluations]]\nattack = "pgd"\neps = ["1e400"]\n',
     ["evaluations[0].eps[0]: '1e400' is too large to be a finite number; write a value like 0.5"]),
    (BASE + '[[evaluations]]\nattack = "pgd"\neps = [1e400]\n',
     ["evaluations[0].eps[0]: Input should be a finite number"]),
    (BASE.replace('"bad"', '"' + "s" * 300 + '"'),
     [f"name: '{'s' * 40}...{'s' * 40}' is not a valid name; use at most 64 letters, digits, '_', '.' or '-', "
      "starting with a letter or digit"]),
    (BASE.replace('name = "a"', 'name = "a\\nb"'),
     ["models[0].name: 'a\\nb' is not a valid name; use at most 64 letters, digits, '_', '.' or '-', "
      "starting with a letter or digit"]),
    (BASE + 'params = { width = ' + "[" * 2000 + "]" * 2000 + " }\n",
     ["arrays or tables nest 2001 levels deep; a suite needs at most 32"]),
    (BASE + 'checkpoint = "w\\u0000.safetensors"\n',
     ["models[0].checkpoint: 'w\\x00.safetensors' is not a usable path (empty, or has control characters)"]),
    (BASE.replace('"bad"', '"../escape"'),
     ["name: '../escape' is not a valid name; use at most 64 letters, digits, '_', '.' or '-', "
      "starting with a letter or digit"]),
    (BASE + '[[models]]\nname = "A"\narch = "simple_cnn"\n',
     ["models[1].name: model names 'a' and 'A' differ only in case or '-'/'_'/'.', which results tables and "
      "file systems merge; rename one"]),
    (BASE + '[[models]]\nname = "a_b"\narch = "simple_cnn"\n[[models]]\nname = "A-B"\narch = "simple_cnn"\n',
     ["models[2].name: model names 'a_b' and 'A-B' differ only in case or '-'/'_'/'.', which results tables and "
      "file systems merge; rename one"]),
    (BASE.replace('name = "a"', 'name = "1e3"'),
     ["models[0].name: name '1e3' reads as a number or boolean in results.csv; start it with a letter"]),
    (BASE + '[[evaluations]]\nattack = "pgd"\neps = [' + ", ".join(["0.1"] * 65) + "]\n",
     ["evaluations[0].eps: Tuple should have at most 64 items after validation, not 65"]),
    ('name = "bad"\n' + "".join(f'[[models]]\nname = "m{i}"\narch = "simple_cnn"\n' for i in range(257)),
     ["models: Tuple should have at most 256 items after validation, not 257"]),
    (BASE + "train = { lr = 1e308 }\n", ["models[0].train.lr: Input should be less than or equal to 10"]),
    (BASE + "params = { width = inf }\n", ["models[0].params.width: inf is not a finite number"]),
    (BASE + 'checkpoint = "missing.safetensors"\n',
     ["models[0].checkpoint: no such file '{dir}/missing.safetensors'; paths are relative to the suite file's folder"]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), REGRESSIONS)
def test_fuzzing_regressions_are_exact_one_line_problems(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert [p.removeprefix(f"{path}: ") for p in info.value.problems] == [
        e.replace("{dir}", str(tmp_path)) for e in expected
    ]
    assert all("\n" not in p and p.startswith(f"{path}: ") for p in info.value.problems)


def test_every_problem_is_listed_at_once(tmp_path, capsys):
    text = (
        'name = "bad"\nseed = -1\n[[models]]\nname = "a"\narch = "simple_cnn"\ntrain = { epocs = 3, lr = 0 }\n'
        '[[evaluations]]\nattack = "pgd"\neps = [0.1, 8, -1]\n'
    )
    path = write(tmp_path, text)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    problems = [p.removeprefix(f"{path}: ") for p in info.value.problems]
    assert problems == [
        "seed: Input should be greater than or equal to 0",
        "models[0].train.lr: Input should be greater than 0",
        "models[0].train.epocs: unknown key; did you mean 'epochs'?",
        "evaluations[0]: eps[1] = 8.0 is out of range for linf on [0, 1] images (0..1); did you mean '8/255'?",
        "evaluations[0]: eps[2] = -1.0 must be a finite number >= 0",
    ]
    assert main(["plan", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"robustbench-cnn: error: {path}: {p}" for p in problems]


def test_a_symlink_loop_is_a_one_line_error(tmp_path):
    loop = tmp_path / "loop.toml"
    loop.symlink_to(loop)
    with pytest.raises(SuiteError, match=r"loop\.toml: cannot read suite file \(") as info:
        load_suite(loop)
    assert len(info.value.problems) == 1


def test_not_a_regular_file_and_too_large(tmp_path):
    with pytest.raises(SuiteError, match="cannot read suite file"):
        load_suite(tmp_path)
    big = write(tmp_path, BASE + "#" * (1 << 20))
    with pytest.raises(SuiteError, match="larger than 1 MiB"):
        load_suite(big)


def test_control_characters_in_keys_stay_on_one_line(tmp_path):
    path = write(tmp_path, BASE + 'train = { "ep\\u2028ochs\\u0007" = 3 }\n')
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert info.value.problems == (f"{path}: models[0].train.ep\\u2028ochs\\x07: unknown key; did you mean 'epochs'?",)
    assert len(str(info.value).splitlines()) == 1


def test_relative_checkpoints_resolve_against_the_suite_folder(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "m.safetensors").write_bytes(b"")
    loaded = load_suite(write(tmp_path, BASE + 'checkpoint = "w/m.safetensors"\n'))
    assert loaded.resolve(loaded.spec.models[0].checkpoint) == tmp_path / "w" / "m.safetensors"


def test_brackets_in_strings_and_comments_are_not_nesting(tmp_path):
    text = BASE.replace('name = "bad"', 'name = "ok"  # ' + "[" * 100) + "checkpoint = " + '"""x' + "{" * 50 + '"""\n'
    text = text.replace('arch = "simple_cnn"', "arch = 'simple_cnn' # " + "{[" * 40)
    path = write(tmp_path, text)
    with pytest.raises(SuiteError) as info:  # parsed: only the (missing) checkpoint is reported
        load_suite(path)
    assert len(info.value.problems) == 1 and "models[0].checkpoint: no such file" in str(info.value)
