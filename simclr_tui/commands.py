"""Command-palette entries for every run: open it, or clone its config into a new run."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider


class RunCommands(Provider):
    """`Open RUN` and `Clone RUN` for each run in the table."""

    def _commands(self) -> list[tuple[str, str, object]]:
        app = self.app
        out = []
        for key, view in getattr(app, "runs", {}).items():
            out.append((f"Open {view.name}", f"{view.kind}, {view.state}", partial(app.open_run, key)))
            if view.kind == "pretrain" and view.config:
                out.append((f"Clone {view.name}", "new run with this run's config", partial(app.new_run, key)))
        return out

    async def discover(self) -> Hits:
        for name, help_text, action in self._commands()[:20]:
            yield DiscoveryHit(name, action, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, action in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), action, help=help_text)
