import pathlib
import sys

# The examples are importable as modules (the tutorial's Adam, the example scripts);
# the JAX settings are in the root conftest.py.
EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
