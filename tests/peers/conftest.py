"""pytest glue for the peers' suites (optax, Flax) run against flr_nnx.

absl's parameterized tests are named by index (``test_optimization17``); a
failing one's report gets a "parameters" section with the case's parameters,
so a CI log says which optimizer and dtype failed.
"""

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    params = getattr(getattr(item, "obj", None), "__x_params_repr__", "")
    if params and report.failed:
        report.sections.append(("parameters", params))
    return report
