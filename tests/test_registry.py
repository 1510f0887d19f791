import pytest

from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.data import DATASETS
from robustbench_cnn.errors import UnknownNameError
from robustbench_cnn.models import MODELS
from robustbench_cnn.registry import Registry


def test_duplicate_name_is_an_error():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: 2)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownNameError, match="unknown model 'mobilenet'; did you mean 'mobilenet_v2'"):
        MODELS.get("mobilenet")
    with pytest.raises(UnknownNameError, match="choose one of"):
        ATTACKS.get("zzzzzz")


def test_builtins_are_registered():
    assert {"simple_cnn", "resnet", "mobilenet_v2"} <= set(MODELS.names())
    assert {"fgsm", "pgd", "apgd_ce", "apgd_dlr", "square", "autoattack"} <= set(ATTACKS.names())
    assert {"digits", "cifar10", "mnist", "fashion_mnist", "svhn"} <= set(DATASETS.names())


def test_builtin_reregistration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        MODELS.register("resnet")(lambda **_: None)
