"""Recording first assignments while init discovers the state.

During init's discovery step the engine runs the hooks on a copy of the
optimizer whose plain dicts are :class:`RecordingDict`\\ s, with a
:class:`Recorder` set as the run's context (:data:`RUN`). Every new dict entry
and every attribute assignment (:meth:`flr_nnx.optim.Optimizer.__setattr__`
asks :data:`RUN`) is recorded: the initial value of a state array is the first
value a hook assigned to it (``_build``'s zeros, or a copy of ``param`` for an
EMA of weights).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

from flr_nnx._engine._walk import ATTR, ITEM, Path, Step, is_transient, walk
from flr_nnx._errors import StateError
from flr_nnx._optimizer import RUN


def scalars(statics: Mapping[Path, Any]) -> dict[Path, Any]:
    """The Python numbers among static values: they may start array state."""
    return {p: v for p, v in statics.items() if isinstance(v, (bool, int, float, complex))}


class Recorder:
    """Records the first value assigned to every place during a discovery step."""

    def __init__(self) -> None:
        self.records: list[tuple[Any, Step, dict[Path, Any]]] = []
        # Plain dicts replaced by recording copies: a hook still holding the original
        # (``self.m = m = {}``) would fill a dict the engine never sees.
        self.replaced: list[tuple[Any, Step, dict[Any, Any], dict[Any, Any]]] = []

    def record(self, container: Any, step: Step, value: Any) -> Any:
        """Records ``value`` assigned at ``step`` of ``container``; returns what to store."""
        copied = recording_copy(value)
        if copied is not value and isinstance(value, dict):
            self.replaced.append((container, step, value, copied))
        found = walk(copied)
        # A Python number assigned first (`self.v[key] = 1.0`) is the entry's first value too.
        self.records.append((container, step, {**found.arrays, **scalars(found.statics)}))
        return copied

    def on_new_attribute(self, obj: Any, name: str, value: Any) -> Any:
        """Called by ``Optimizer.__setattr__`` for every assignment during discovery."""
        if is_transient(obj, name):  # not state: nothing to record
            return value
        return self.record(obj, (ATTR, name), value)

    def check_aliases(self) -> None:
        """Refuses entries added to a recorded dict through another name for it."""
        for container, step, original, copied in self.replaced:
            if any(key not in copied for key in original):
                where = f".{step[1]}" if step[0] == ATTR else f"[{step[1]!r}]"
                raise StateError(
                    f"A hook of {type(container).__name__} assigned a dict to `{where}` and then "
                    "added entries through another name for it (e.g. `self.m = m = {}` followed "
                    "by `m[key] = ...`). During init the engine records state through the "
                    "attribute, so those entries would be lost. Fix: add entries through the "
                    "attribute itself (`self.m[key] = ...`)."
                )

    def first_values(self, containers: Mapping[int, Path]) -> dict[Path, Any]:
        """The first value recorded at each path, given where each container ended up."""
        first: dict[Path, Any] = {}
        for container, step, snapshot in self.records:
            base = containers.get(id(container))
            if base is None:
                continue
            for rel, leaf in snapshot.items():
                first.setdefault((*base, step, *rel), leaf)
        return first


class RecordingDict(dict):
    """A dict that tells the run's recorder about every new key."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self and (run := RUN.get()) is not None:
            value = run.record(self, (ITEM, key), value)
        dict.__setitem__(self, key, value)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


class RecordingDefaultDict(collections.defaultdict):
    """A defaultdict (torch-style ``self.state[key]``) that records new keys too."""

    __setitem__ = RecordingDict.__setitem__
    setdefault = RecordingDict.setdefault
    update = RecordingDict.update

    def __missing__(self, key: Any) -> Any:
        if self.default_factory is None:
            raise KeyError(key)
        self[key] = self.default_factory()
        # The stored value is the recording copy, not the factory's original.
        return dict.__getitem__(self, key)


def recording_copy(value: Any) -> Any:
    """Plain dicts inside a newly assigned value become recording dicts."""
    if type(value) is collections.defaultdict:
        new_default = RecordingDefaultDict(value.default_factory)
        for key, child in value.items():
            dict.__setitem__(new_default, key, recording_copy(child))
        return new_default
    if type(value) is dict:
        new = RecordingDict()
        for key, child in value.items():
            dict.__setitem__(new, key, recording_copy(child))
        return new
    return value
