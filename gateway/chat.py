"""`agentmesh chat`: the plan, each step's status and the answer live (rich on a TTY, plain lines otherwise)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any, TextIO

from agentmesh.agent.v1 import agent_service_pb2 as pb
from gateway.channels.progress import Progress
from gateway.client import AgentClient

TERMINAL_ICONS = {"pending": "·", "running": "…", "ok": "✓", "denied": "⛔", "failed": "✗", "skipped": "↷",
                  "awaiting": "?"}
EXIT_WORDS = frozenset({"exit", "quit", "bye", ":q"})


class PlainView:
    """One line per thing that happened (pipes, logs, dumb terminals)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.answering = False

    def start(self, progress: Progress) -> None:
        self.answering = False

    def show(self, progress: Progress, kind: str, event: pb.ConverseResponse) -> None:
        if kind == "plan":
            for i, step in enumerate(progress.steps, 1):
                print(f"  plan {i}. {step.label} [{step.tool}]", file=self.out, flush=True)
            if progress.note:
                print(f"  note: {progress.note}", file=self.out, flush=True)
        elif kind == "step_finished":
            r = event.step_finished
            view = next((s for s in progress.steps if s.step_id == r.step_id), None)
            if view is not None:
                detail = view.summary or view.error
                print(f"  {TERMINAL_ICONS.get(view.status, '?')} {view.label}: {view.status}"
                      + (f" — {detail}" if detail else ""), file=self.out, flush=True)
        elif kind == "answer_token":
            if not self.answering:
                self.answering = True
                print("agent> ", end="", file=self.out)
            print(event.answer_token, end="", file=self.out, flush=True)

    def finish(self, progress: Progress) -> None:
        if not self.answering:
            print(f"agent> {progress.answer or progress.error}", end="", file=self.out)
        print(file=self.out)
        for connector, url in progress.links.items():
            print(f"  link your {connector} account: {url}", file=self.out)
        print(f"  [{progress.outcome or 'failed'}, {progress.duration_s:.2f} s]", file=self.out, flush=True)


class RichView:
    """A live panel: the plan with each step's status, then the answer as it streams."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console()
        self.live: Any = None

    def _render(self, progress: Progress) -> Any:
        from rich.console import Group
        from rich.markdown import Markdown
        from rich.panel import Panel
        from rich.text import Text

        lines: list[Any] = []
        for step in progress.steps:
            detail = step.summary or step.error
            line = Text(f"{TERMINAL_ICONS.get(step.status, '?')} ", style=_style(step.status))
            line.append(step.label, style="bold")
            line.append(f"  {step.tool}", style="dim")
            if detail and step.status != "running":
                line.append(f" — {detail}")
            lines.append(line)
        if progress.note:
            lines.append(Text(progress.note, style="italic"))
        if not lines:
            lines.append(Text("planning…", style="dim"))
        body: list[Any] = [Panel(Group(*lines), title="plan", title_align="left", border_style="blue")]
        if progress.answer:
            body.append(Markdown(progress.answer))
        if progress.error and not progress.answer:
            body.append(Text(progress.error, style="red"))
        for connector, url in progress.links.items():
            body.append(Text(f"link your {connector} account: {url}", style="yellow"))
        if progress.outcome:
            body.append(Text(f"{progress.outcome} · {progress.duration_s:.2f} s", style="dim"))
        return Group(*body)

    def start(self, progress: Progress) -> None:
        from rich.live import Live

        self.live = Live(self._render(progress), console=self.console, refresh_per_second=12, transient=False)
        self.live.start()

    def show(self, progress: Progress, kind: str, event: pb.ConverseResponse) -> None:
        if self.live is not None:
            self.live.update(self._render(progress))

    def finish(self, progress: Progress) -> None:
        if self.live is not None:
            self.live.update(self._render(progress))
            self.live.stop()
            self.live = None

    def pause(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _style(status: str) -> str:
    return {"ok": "green", "denied": "red", "failed": "red", "skipped": "yellow", "awaiting": "yellow",
            "running": "cyan"}.get(status, "white")


async def _read(prompt: str) -> str | None:
    try:
        return await asyncio.to_thread(input, prompt)
    except EOFError:
        return None


async def chat(client: AgentClient, user: str, tenant: str, *, tty: bool | None = None) -> int:
    """Reads requests until end of input or `exit`; every turn is a turn of one session."""
    tty = sys.stdin.isatty() and sys.stdout.isatty() if tty is None else tty
    session_id = f"chat-{uuid.uuid4().hex}"
    view: RichView | PlainView = RichView() if tty else PlainView(sys.stdout)
    print(f"agentmesh chat — {user} in {tenant} (session {session_id}); `exit` or Ctrl-D leaves", flush=True)
    while True:
        text = await _read("you> ")
        if text is None or text.strip().lower() in EXIT_WORDS:
            print()
            return 0
        if not text.strip():
            continue
        progress = Progress(request=text.strip())
        view.start(progress)

        def on_event(event: pb.ConverseResponse, progress: Progress = progress) -> None:
            kind = progress.apply(event)
            view.show(progress, kind, event)

        async def confirm(approval: pb.ApprovalNeeded, progress: Progress = progress) -> bool:
            if isinstance(view, RichView):
                view.pause()
            prompt = approval.prompt or f"run {approval.tool}?"
            answer = await _read(f"confirm: {prompt} [y/N] ")
            approved = (answer or "").strip().lower() in ("y", "yes")
            if isinstance(view, RichView):
                view.start(progress)
            return approved

        turn = await client.turn(text.strip(), user=user, session_id=session_id, confirm=confirm, on_event=on_event)
        if turn.failure is not None and not progress.outcome:
            progress.error = f"{turn.failure.reason}: {turn.failure.message}"
            progress.outcome = "failed"
        view.finish(progress)
