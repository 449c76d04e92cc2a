"""From refs (`module:Class`) to `Action` subclasses, importing only declared modules.

A ref stored in the database is data, not code to trust: the runner and the CLI import a
module only when an operator declared it (`--import`, the config's `imports`, or the
`bgtaskex.actions` entry-point group), or when it lies inside a declared package.
"""

from __future__ import annotations

import importlib
import math
import numbers
import os
import re
import reprlib
import sys
import time
from collections.abc import Callable, Iterable

from .action import Action
from .exceptions import InvalidRef, ModuleUnavailable
from .pythonpath import import_hint

_REF = re.compile(
    r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<qualname>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$"
)

#: Modules that ship with bgtaskex and are always allowed.
BUILTIN_MODULES = ("bgtaskex.examples", "bgtaskex.builtin")
ENTRY_POINT_GROUP = "bgtaskex.actions"
#: When this process (or the daemon it was forked from) loaded bgtaskex: a module file
#: changed after it may be newer than the module this process holds.
_LOADED_AT = time.time()


def parse_ref(ref: str) -> tuple[str, str]:
    """Split `module:Class`; InvalidRef when it is not of that form."""
    match = _REF.match(ref) if isinstance(ref, str) else None
    if match is None:
        raise InvalidRef(f"invalid action ref {ref!r}: expected 'package.module:ClassName'")
    return match["module"], match["qualname"]


class Registry:
    """Resolves refs to Action classes, with a cache.

    `trust_refs=True` (the Python client: its caller wrote the ref) imports any module;
    otherwise only declared modules and their submodules.
    """

    def __init__(
        self,
        modules: Iterable[str] = (),
        *,
        entry_points: bool = True,
        trust_refs: bool = False,
    ) -> None:
        self._declared = set(BUILTIN_MODULES) | {m.strip() for m in modules if m.strip()}
        self._entry_points_pending = entry_points
        self._trust_refs = trust_refs
        self._cache: dict[str, type[Action]] = {}

    @property
    def declared_modules(self) -> frozenset[str]:
        return frozenset(self._declared)

    def _declared_module(self, module: str) -> bool:
        return any(module == d or module.startswith(d + ".") for d in self._declared)

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points

        self._entry_points_pending = False
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            self._declared.add(entry.value.split(":", 1)[0].strip())

    def allowed(self, module: str) -> bool:
        if self._trust_refs or self._declared_module(module):
            return True
        if self._entry_points_pending:
            self._load_entry_points()
            return self._declared_module(module)
        return False

    def resolved(self, ref: str) -> bool:
        """Whether `ref` was resolved before, so resolving it again runs no user code."""
        return ref in self._cache

    def resolve(self, ref: str) -> type[Action]:
        """The Action subclass that `ref` names, or InvalidRef saying why not."""
        cached = self._cache.get(ref)
        if cached is not None:
            return cached
        module_name, qualname = parse_ref(ref)
        if not self.allowed(module_name):
            raise ModuleUnavailable(
                f"action ref {ref!r}: module {module_name!r} is not declared "
                "(use --import MODULE, the config's 'imports' or the 'bgtaskex.actions' "
                "entry points)",
                module_name,
            )
        fresh = module_name not in sys.modules
        try:
            obj: object = importlib.import_module(module_name)
        except (Exception, SystemExit) as err:  # a broken module must not end the run
            hint = import_hint(module_name, err)
            raise ModuleUnavailable(
                f"action ref {ref!r}: cannot import {module_name!r}: {type(err).__name__}: "
                f"{err}{hint}",
                module_name,
            ) from err
        for part in qualname.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                if not fresh and _changed_since_loaded(module_name):
                    raise ModuleUnavailable(
                        f"action ref {ref!r}: module {module_name!r} has no {qualname!r} as "
                        "this process loaded it, and its file changed since (a deploy?): "
                        "restart the daemon (systemctl restart bgtaskex) to load the new code",
                        module_name,
                    ) from None
                raise InvalidRef(
                    f"action ref {ref!r}: module {module_name!r} has no {qualname!r}"
                ) from None
        if not (isinstance(obj, type) and issubclass(obj, Action)):
            raise InvalidRef(f"action ref {ref!r} is not a subclass of bgtaskex.Action")
        if obj is Action:
            raise InvalidRef(f"action ref {ref!r} names the abstract base bgtaskex.Action")
        check_class_attributes(ref, obj)
        self._cache[ref] = obj
        return obj


def _changed_since_loaded(module_name: str) -> bool:
    """Whether the file of the module this process holds changed after bgtaskex was
    loaded: a class missing from it may be in the new file (a daemon not restarted after
    a deploy). The task then waits for the restart instead of failing."""
    spec = getattr(sys.modules.get(module_name), "__spec__", None)
    origin = getattr(spec, "origin", None)
    if not isinstance(origin, str):
        return False
    try:
        return os.stat(origin).st_mtime > _LOADED_AT
    except OSError:  # a built-in module, or the file is gone
        return False


def check_class_attributes(ref: str, cls: type[Action]) -> None:
    """InvalidRef when the class sets `retry_delay` / `max_retry_delay` to anything but
    None or seconds (a finite number >= 0), or `max_attempts` to anything but
    None or a whole number >= 1: the run reads them after each death, and a bad value
    (`retry_delay = "30s"`) would otherwise fail there at every run, the task never ending."""
    for name in ("retry_delay", "max_retry_delay"):
        value = getattr(cls, name, None)
        if value is not None and not _seconds(value):
            raise InvalidRef(
                f"action ref {ref!r}: {cls.__qualname__}.{name} = {reprlib.repr(value)}: "
                "expected a number of seconds >= 0 (finite), or None"
            )
    attempts = getattr(cls, "max_attempts", None)
    if attempts is not None and (
        isinstance(attempts, bool) or not isinstance(attempts, numbers.Integral) or attempts < 1
    ):
        raise InvalidRef(
            f"action ref {ref!r}: {cls.__qualname__}.max_attempts = {reprlib.repr(attempts)}: "
            "expected a whole number >= 1, or None"
        )


def _seconds(value: object) -> bool:
    """A finite number >= 0 (a delay past 100 years is capped where it becomes a date)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy's too
        return False
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        return False
    return math.isfinite(seconds) and seconds >= 0


def load_callable(ref: str, what: str = "callable") -> Callable[..., object]:
    """The function a `module:function` ref names (from the operator's config)."""
    from .exceptions import ConfigError

    module_name, _, name = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise ConfigError(f"{what} {ref!r}: cannot import {module_name!r}: {err}") from err
    target = getattr(module, name, None)
    if not callable(target):
        raise ConfigError(f"{what} {ref!r}: {module_name!r} has no function {name!r}")
    return target  # type: ignore[no-any-return]
