"""Every example runs (with small settings), so the examples cannot rot."""

import quickstart


def test_quickstart_trains_and_agrees_with_optax(capsys):
    curves = quickstart.main(steps=30)
    reference = curves["optax.adam"]
    assert reference[-1] < reference[0]
    for name, curve in curves.items():
        assert all(abs(a - b) <= 1e-5 * abs(b) for a, b in zip(curve, reference, strict=True)), name
    assert "largest relative deviation" in capsys.readouterr().out
