"""The `State` of the global options: settings loaded on first use, and the client.

Without click, so that `run-once` can start without it (cli/fast.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import Settings, load_settings

if TYPE_CHECKING:
    from ..client import Client


class State:
    """What the global options gave; settings are loaded on first use.

    With `log_later`, loading the settings does not set up logging (an idle `run-once`
    logs nothing, and need not import `logging`): `start_logging` does, before anything
    that may log."""

    def __init__(
        self,
        config_file: str | None = None,
        overrides: dict[str, Any] | None = None,
        sources: dict[str, str] | None = None,
        log_later: bool = False,
    ) -> None:
        self.config_file = config_file
        self.overrides: dict[str, Any] = {} if overrides is None else overrides
        self.sources: dict[str, str] = {} if sources is None else sources
        self.log_later = log_later
        self._settings: Settings | None = None
        self._client: Client | None = None

    def settings(self, **more: Any) -> Settings:
        if more:
            self.overrides.update({k: v for k, v in more.items() if v is not None})
            self._settings = None
        if self._settings is None:
            self._settings = load_settings(self.config_file, self.overrides, sources=self.sources)
            if not self.log_later:
                self._setup_logging()
        return self._settings

    def start_logging(self) -> None:
        """Set up logging now if loading the settings left it for later."""
        if self.log_later and self._settings is not None:
            self.log_later = False
            self._setup_logging()

    def _setup_logging(self) -> None:
        from .logs import setup_logging

        assert self._settings is not None
        setup_logging(self._settings.log_level, self._settings.log_format)

    def client(self, *, readonly: bool = False, create: bool = True) -> Client:
        """The client of the settings; `readonly` for the commands that only read: they
        create and migrate nothing, and see a database without the schema as empty;
        `create=False` (`resume`): the same on a database without the schema only."""
        if self._client is None:
            from ..client import connect

            settings = self.settings()
            self.start_logging()
            self._client = connect(
                settings=settings, trust_refs=False, readonly=readonly, create=create
            )
        return self._client

    def reload(self) -> None:
        """Forget the loaded settings (the daemon's SIGHUP): the next use reads them anew."""
        self._settings = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
