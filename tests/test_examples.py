"""Every example runs (with small settings), so the examples cannot rot."""

import custom_optimizer
import lbfgs_nnx
import optax_chain
import quickstart
import train_digits


def test_quickstart_trains_and_agrees_with_optax(capsys):
    curves = quickstart.main(steps=30)
    reference = curves["optax.adam"]
    assert reference[-1] < reference[0]
    for name, curve in curves.items():
        assert all(abs(a - b) <= 1e-5 * abs(b) for a, b in zip(curve, reference, strict=True)), name
    assert curves["flr.optim.Adam / NNXOptimizer"] == reference  # bit-identical
    assert curves["tutorial Adam / NNXOptimizer"] == curves["tutorial Adam / as_optax"]
    assert "largest relative deviation" in capsys.readouterr().out


def test_train_digits_trains_three_adams_and_plots(tmp_path, capsys):
    out = train_digits.main(
        epochs=2, batch_size=32, limit=400, plot_path=tmp_path / "loss.png", progress=True
    )
    curves = out["curves"]
    tutorial = curves["tutorial Adam (NNXOptimizer)"]
    library = curves["flr.optim.Adam (NNXOptimizer)"]
    reference = curves["optax.adam"]
    assert len(reference) == 2 * (320 // 32)
    assert sum(reference[-3:]) < sum(reference[:3])  # it learns
    assert library == reference  # bit-identical updates give identical losses
    assert all(abs(a - b) <= 1e-3 * b for a, b in zip(tutorial, reference, strict=True))
    assert all(0.0 <= acc <= 1.0 for acc in out["accuracy"].values())
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    captured = capsys.readouterr()
    assert "test accuracy" in captured.out
    assert "tutorial Adam" in captured.err  # the tqdm progress bar


def test_optax_chain_matches_optax(capsys):
    curves = optax_chain.main(steps=30)
    reference = curves["optax.adam(schedule)"]
    assert reference[-1] < reference[0]
    assert curves["flr.optim.Adam(schedule)"] == reference
    tutorial = curves["tutorial Adam + scale_by_schedule"]
    assert all(abs(a - b) <= 1e-4 * b for a, b in zip(tutorial, reference, strict=True))
    assert "bit-identical to optax: True" in capsys.readouterr().out


def test_custom_optimizer_is_bit_identical_to_optax_adan():
    out = custom_optimizer.main(steps=20, check_steps=5, bridges=("nnx",))
    assert len(out["reports"]) == 2
    assert all(report.bit_identical for report in out["reports"])
    assert out["adan"] == out["optax.adan"]
    assert out["adan"][-1] < out["adan"][0]


def test_lbfgs_nnx_is_optax_lbfgs_step_for_step(tmp_path, capsys):
    out = lbfgs_nnx.main(steps=12, plot_path=tmp_path / "lbfgs.png")
    curves = out["curves"]
    ours = curves["flr.optim.LBFGS (NNXOptimizer)"]
    reference = curves["optax.lbfgs (nnx.Optimizer)"]
    assert ours == reference  # bit-identical updates give identical losses
    assert reference[-1] < 0.5 * reference[0]  # it learns
    assert (tmp_path / "lbfgs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "identical losses at every step: True" in capsys.readouterr().out
