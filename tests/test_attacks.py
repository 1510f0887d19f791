"""Attack invariants over many cases on a tiny trained model."""

from functools import partial

import pytest
import torch

from robustbench_cnn.attacks import ATTACKS, Norm
from robustbench_cnn.attacks.evaluate import check_perturbation, robust_correct
from robustbench_cnn.errors import AttackContractError

CASES = [
    ("fgsm", "linf", 0.05), ("fgsm", "linf", 0.2),
    ("pgd", "linf", 0.02), ("pgd", "linf", 0.1), ("pgd", "linf", 0.3), ("pgd", "l2", 0.25), ("pgd", "l2", 1.5),
    ("apgd_ce", "linf", 0.1), ("apgd_dlr", "linf", 0.1), ("apgd_ce", "l2", 1.0),
]  # fmt: skip


def run(model, digits, attack, norm, eps, steps=5, restarts=1, seed=0):
    x, y = digits.x_eval, digits.y_eval
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    make = partial(ATTACKS.get(attack), eps=eps, norm=norm, steps=steps, step_size=None, num_classes=10)
    return clean, robust_correct(model, make, x, y, clean, eps, norm, restarts=restarts, seed=seed, progress=False)


@pytest.mark.parametrize(("attack", "norm", "eps"), CASES)
def test_robust_never_exceeds_clean(tiny_model, digits, attack, norm, eps):
    clean, robust = run(tiny_model, digits, attack, norm, eps)
    assert clean.float().mean() > 0.8
    assert not (robust & ~clean).any()
    assert not tiny_model.training


@pytest.mark.parametrize(("attack", "norm"), [("fgsm", "linf"), ("pgd", "linf"), ("pgd", "l2"), ("apgd_ce", "linf")])
def test_eps_zero_keeps_clean_accuracy(tiny_model, digits, attack, norm):
    clean, robust = run(tiny_model, digits, attack, norm, 0.0)
    assert torch.equal(clean, robust)


@pytest.mark.parametrize(("attack", "norm", "eps"), CASES)
def test_perturbation_stays_in_ball_and_box(tiny_model, digits, attack, norm, eps):
    x, y = digits.x_eval[:64], digits.y_eval[:64]
    x_adv = ATTACKS.get(attack)(tiny_model, eps=eps, norm=norm, steps=5, step_size=None, num_classes=10)(x, y)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + 1e-5) + 1e-5).all()
    check_perturbation(x, x_adv, eps, norm)  # the runner's own guard agrees


def test_pgd_is_stronger_than_fgsm_and_grows_with_eps(tiny_model, digits):
    _, fgsm = run(tiny_model, digits, "fgsm", "linf", 0.15)
    _, pgd = run(tiny_model, digits, "pgd", "linf", 0.15, steps=10)
    _, pgd_big = run(tiny_model, digits, "pgd", "linf", 0.4, steps=10)
    assert pgd.sum() <= fgsm.sum()
    assert pgd_big.sum() <= pgd.sum()
    assert pgd_big.float().mean() < 0.1


def test_restarts_never_increase_robust_accuracy(tiny_model, digits):
    _, one = run(tiny_model, digits, "pgd", "linf", 0.08, steps=3, restarts=1, seed=1)
    _, three = run(tiny_model, digits, "pgd", "linf", 0.08, steps=3, restarts=3, seed=1)
    assert not (three & ~one).any()


def test_same_seed_same_result(tiny_model, digits):
    a = run(tiny_model, digits, "pgd", "l2", 0.8, seed=7)[1]
    b = run(tiny_model, digits, "pgd", "l2", 0.8, seed=7)[1]
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("x_adv_fn", "message"),
    [
        (lambda x: (x + 0.2).clamp(0, 1), "left the linf ball"),
        (lambda x: torch.full_like(x, 1.01), "left \\[0, 1\\]"),
        (lambda x: x + float("nan"), "non-finite"),
    ],
)
def test_contract_violations_are_caught(x_adv_fn, message):
    x = torch.rand(4, 1, 8, 8) * 0.5 + 0.25
    with pytest.raises(AttackContractError, match=message):
        check_perturbation(x, x_adv_fn(x), 0.1, "linf")


def test_l2_ball_violation_is_caught():
    x = torch.full((2, 1, 8, 8), 0.5)
    with pytest.raises(AttackContractError, match="l2 ball"):
        check_perturbation(x, x + 0.1, 0.5, "l2")  # ||delta||_2 = 0.8


def test_runner_guard_rejects_a_cheating_attack(tiny_model, digits):
    class Cheat:
        def __init__(self, model):
            pass

        def __call__(self, x, y):
            return (x + 0.5).clamp(0, 1)

    x, y = digits.x_eval[:16], digits.y_eval[:16]
    with pytest.raises(AttackContractError):
        robust_correct(tiny_model, Cheat, x, y, torch.ones(16, dtype=torch.bool), 0.1, "linf", progress=False)


def test_autoattack_runs_within_the_threat_model(tiny_model, digits):
    x, y = digits.x_eval[:16], digits.y_eval[:16]
    with torch.no_grad():
        clean = tiny_model(x).argmax(1) == y
    make = partial(ATTACKS.get("autoattack"), eps=0.1, norm="linf", steps=10, step_size=None, num_classes=10)
    robust = robust_correct(tiny_model, make, x, y, clean, 0.1, "linf", progress=False)  # guard checks the ball
    _, pgd = run(tiny_model, digits, "pgd", "linf", 0.1)
    assert not (robust & ~clean).any()
    assert robust.sum() <= pgd[:16].sum()  # the ensemble is at least as strong as PGD here


def _registered() -> list[tuple[str, str]]:
    return [(name, norm) for name in ATTACKS.names() for norm in ATTACKS.get(name).norms]


@pytest.mark.parametrize(("attack", "norm"), _registered())
def test_every_registered_attack_keeps_the_contract(tiny_model, digits, attack, norm):
    """Each registered attack, in each norm it declares: adversarial images of the inputs' shape,
    dtype and device, finite, in [0, 1] and in the eps ball; robust only where clean-correct; the
    model left in eval mode."""
    eps = 0.3 if norm == "linf" else 1.0  # large enough that AutoAttack stops after APGD (FAB, Square: minutes)
    x, y = digits.x_eval[:8], digits.y_eval[:8]
    factory = ATTACKS.get(attack)
    x_adv = factory(tiny_model, eps=eps, norm=Norm(norm), steps=3, step_size=None, num_classes=10)(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    check_perturbation(x, x_adv, eps, Norm(norm))
    assert not tiny_model.training
    with torch.no_grad():
        clean = tiny_model(x).argmax(1) == y
    make = partial(factory, eps=eps, norm=norm, steps=3, step_size=None, num_classes=10)
    robust = robust_correct(tiny_model, make, x, y, clean, eps, norm, progress=False)
    assert not (robust & ~clean).any()


def test_check_perturbation_takes_a_norm_enum_and_refuses_unknown_norms():
    x = torch.full((2, 1, 8, 8), 0.5)
    check_perturbation(x, x + 0.05, 0.1, Norm.LINF)
    with pytest.raises(AttackContractError, match="l2 ball"):
        check_perturbation(x, x + 0.05, 0.1, Norm.L2)  # ||delta||_2 = 0.4
    with pytest.raises(AttackContractError, match="unknown norm 'l1'"):
        check_perturbation(x, x + 0.05, 10.0, "l1")  # used to be checked as L2 and pass
