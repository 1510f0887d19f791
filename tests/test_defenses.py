"""Defenses do what their papers say on a tiny model; their specs validate like every other field."""

from functools import partial

import pytest
import torch

from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.attacks.evaluate import robust_correct
from robustbench_cnn.attacks.sanity import input_gradient_norms
from robustbench_cnn.config.load import parse_suite
from robustbench_cnn.config.spec import TrainSpec
from robustbench_cnn.defenses import DEFENSES
from robustbench_cnn.errors import SuiteError
from robustbench_cnn.models import build_model

RECIPE = TrainSpec(epochs=15, lr=0.1, batch_size=64)


def fresh(digits):
    torch.manual_seed(0)
    return build_model("simple_cnn", 10, 1, digits.mean, digits.std, {"width": 8, "stages": 2})


def train_with(digits, name, **params):
    model = fresh(digits)
    defense = DEFENSES.get(name)
    spec = defense.spec(name=name, **params)
    log = defense(model, digits.x_train, digits.y_train, RECIPE, spec, 0, "cpu", progress=False)
    return model.eval(), log


def pgd_acc(model, digits, eps=0.1):
    x, y = digits.x_eval, digits.y_eval
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    make = partial(ATTACKS.get("pgd"), eps=eps, norm="linf", steps=10, step_size=None)
    return float(clean.float().mean()), float(
        robust_correct(model, make, x, y, clean, eps, "linf", progress=False).float().mean()
    )


def test_pgd_at_buys_robustness(digits, tiny_model):
    _, standard = pgd_acc(tiny_model, digits)
    model, _ = train_with(digits, "pgd_at", eps=0.1, steps=3)
    clean, robust = pgd_acc(model, digits)
    assert clean > 0.8 and robust > standard + 0.3, (clean, robust, standard)


def test_fgsm_rs_trains_and_its_guard_runs(digits):
    model, log = train_with(digits, "fgsm_rs", eps=0.1, check_size=64)
    clean, robust = pgd_acc(model, digits)
    assert 1 <= log.epochs <= RECIPE.epochs and clean > 0.5 and robust > 0.2


def test_distillation_at_t1_vanishes_gradients(digits, tiny_model):
    model, _ = train_with(digits, "distillation", temperature=20)
    x, y = digits.x_eval, digits.y_eval
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    assert correct.float().mean() > 0.8
    distilled = input_gradient_norms(model, x[correct], y[correct])
    standard = input_gradient_norms(tiny_model, x[correct], y[correct])
    assert distilled.median() < standard.median() / 100


def test_bn_statistics_are_not_updated_by_attack_crafting(digits):
    model = fresh(digits)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    spec = DEFENSES.get("pgd_at").spec(name="pgd_at", eps=0.1, steps=2)
    one_batch = TrainSpec(epochs=1, batch_size=2000, lr=0.01)
    calls = []
    bn.register_forward_hook(lambda m, i, o: calls.append(m.training))
    DEFENSES.get("pgd_at")(model, digits.x_train[:64], digits.y_train[:64], one_batch, spec, 0, "cpu", progress=False)
    assert calls.count(True) == 1  # only the training forward pass; the 2 attack steps ran in eval mode


BASE = 'name = "s"\n[[models]]\nname = "m"\narch = "simple_cnn"\n'


@pytest.mark.parametrize(
    ("defense", "expected"),
    [
        ('{ name = "pgd-at" }', "models[0].defense: unknown defense 'pgd-at'; did you mean 'pgd_at'?"),
        ('{ name = "pgd_at", epss = 0.1 }', "models[0].defense: pgd_at.epss: unknown key"),
        ('{ name = "gaussian", sigma = -1 }', "models[0].defense: gaussian.sigma: Input should be greater than 0"),
        ("{ sigma = 0.25 }", "a defense is a table with a 'name' key"),
    ],
)
def test_bad_defense_specs_are_named(defense, expected):
    import tomllib

    with pytest.raises(SuiteError, match=expected.replace("[", r"\[").replace("]", r"\]").replace("?", r"\?")):
        parse_suite(tomllib.loads(BASE + f"defense = {defense}\n"), "s.toml")


def test_defense_name_reaches_the_results(digits):
    import tomllib

    spec = parse_suite(tomllib.loads(BASE + 'defense = { name = "trades", beta = 3.0 }\n'), "s.toml")
    assert spec.models[0].defense_name == "trades" and spec.models[0].defense.beta == 3.0


def test_trades_buys_robustness(digits, tiny_model):
    _, standard = pgd_acc(tiny_model, digits)
    model, _ = train_with(digits, "trades", eps=0.1, steps=2, beta=6.0)
    clean, robust = pgd_acc(model, digits)
    assert clean > 0.7 and robust > standard + 0.2, (clean, robust, standard)
