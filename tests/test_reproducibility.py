import numpy as np
import pytest
import torch

import companion


def test_setup_fixes_seeds_threads_and_precision():
    companion.setup(seed=7)
    first = (torch.rand(3), np.random.rand(3))
    companion.setup(seed=7)
    second = (torch.rand(3), np.random.rand(3))
    torch.testing.assert_close(first[0], second[0], rtol=0, atol=0)
    np.testing.assert_array_equal(first[1], second[1])
    assert torch.get_num_threads() == 1
    assert "0.1235" in repr(torch.tensor([0.123456]))


def test_different_seeds_give_different_numbers():
    companion.setup(seed=1)
    a = torch.rand(4)
    companion.setup(seed=2)
    assert not torch.equal(a, torch.rand(4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"seed": -1}, "seed"), ({"threads": 0}, "threads"), ({"precision": -2}, "precision"), ({"seed": 1.5}, "seed")],
)
def test_setup_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        companion.setup(**kwargs)


def test_unknown_attribute_has_clear_error():
    with pytest.raises(AttributeError, match="não tem o atributo"):
        companion.nao_existe  # noqa: B018
