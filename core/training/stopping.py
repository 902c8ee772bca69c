"""Stopping a run on SIGINT/SIGTERM, even one whose step is stuck in native code.

The first signal asks the loop to stop after the current step (it then checkpoints and
says ``stopped``). Python runs a signal handler only between bytecodes of the main thread,
so a step stuck inside a C call (a oneDNN kernel that hangs, a deadlock in ``free``) would
never see it. So the handler is backed by a watcher thread, woken through
``signal.set_wakeup_fd`` by the signal itself, which runs while the main thread is inside
any call that releases the GIL (PyTorch's operators and autograd do):

* if within the grace period after the first signal the main thread neither runs Python
  code (Python's own handler then runs, which proves it is not stuck: a slow kNN monitor or
  checkpoint is left to finish) nor ends a step, the watcher calls ``on_give_up`` (the
  runner records ``stopped`` at the last checkpoint's step, with a note), prints every
  thread's stack, and ends the process with exit code 128 + signal;
* a second SIGINT/SIGTERM ends it the same way at once (one within DUPLICATE_S of the first
  is the same stop delivered twice, as Slurm does when it signals both a job step and the
  batch shell that forwards it, and is ignored).

The grace period is ``SIMCLR_STOP_GRACE`` seconds (default 60; 20 under torchrun, which
SIGKILLs its workers 30 s after forwarding a SIGTERM), or three times the slowest of the
last 20 steps if that is longer. A call stuck while holding the GIL stops nothing in
Python: SIGKILL it (the TUI's second ``x``); the run then reads as crashed and resumes from
its last checkpoint.
"""

from __future__ import annotations

import faulthandler
import os
import select
import signal
import socket
import threading
import time
from collections import deque
from typing import Callable

from core.errors import ConfigError

SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEFAULT_GRACE_S = 60.0
TORCHRUN_GRACE_S = 20.0
#: a second signal this soon after the first is the same stop delivered twice, not a person's second ask
DUPLICATE_S = 0.5  # torchrun's own wait between forwarding SIGTERM and SIGKILL is 30 s


def base_grace() -> float:
    text = os.environ.get("SIMCLR_STOP_GRACE", "")
    default = TORCHRUN_GRACE_S if "LOCAL_RANK" in os.environ else DEFAULT_GRACE_S
    try:
        value = float(text) if text.strip() else default
    except ValueError:
        raise ConfigError(f"SIMCLR_STOP_GRACE={text!r} in the environment: give seconds, e.g. 60, or unset it") from None
    if not value > 0:
        raise ConfigError(f"SIMCLR_STOP_GRACE={text!r} in the environment must be a positive number of seconds")
    return value


class StopGuard:
    """The stop request of one run.

    ``requested``: this process was asked to stop (a signal). ``agreed``: every rank agreed
    to stop at this step (``core.training.trainer.stop_agreed`` sets it; the loop reads only it, so
    all ranks leave the loop at the same step). Use as a context manager from the main
    thread (elsewhere it installs nothing and only holds the flags); it restores the
    previous handlers on exit. Call ``beat()`` after every step.
    """

    def __init__(self, on_signal: Callable[[], None] | None = None) -> None:
        self.on_signal = on_signal  # also called by Python's handler, in the main thread (it may raise)
        self.requested = False
        self.agreed = False
        self.on_give_up: Callable[[str], str | None] | None = None  # returns what it recorded
        self.grace_s = base_grace()
        self._beats: deque[float] = deque(maxlen=20)  # seconds between beats
        self._last_beat: float | None = None  # the first step's start-up cost is no step time
        self._answered = False  # the main thread ran Python code since the signal
        self._signalled_at: float | None = None
        self._signal: int | None = None
        self._installed = False
        self._lock = threading.Lock()  # the watcher gives up once, whoever asks

    # ------------------------------------------------------------------ the loop's side
    def beat(self) -> None:
        now = time.monotonic()
        if self._last_beat is not None:
            self._beats.append(now - self._last_beat)
        self._last_beat = now
        if self._signalled_at is not None:
            self._answered = True

    def grace(self) -> float:
        return max(self.grace_s, 3 * max(tuple(self._beats), default=0.0))  # tuple(): one C-level copy

    # ------------------------------------------------------------------ installing
    def __enter__(self) -> StopGuard:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._old = {s: signal.getsignal(s) for s in SIGNALS}
        for s in SIGNALS:
            signal.signal(s, self._handler)
        self._rx, tx = socket.socketpair()
        tx.setblocking(False)
        self._tx = tx
        self._old_fd = signal.set_wakeup_fd(tx.fileno(), warn_on_full_buffer=False)
        self._installed = True
        self._thread = threading.Thread(target=self._watch, name="simclr-stop-watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if not self._installed:
            return
        signal.set_wakeup_fd(self._old_fd)
        for s, h in self._old.items():
            signal.signal(s, h)
        self._tx.close()  # the watcher reads end-of-file and returns
        self._thread.join(timeout=5)
        self._rx.close()
        self._installed = False

    def _handler(self, signum, frame) -> None:  # noqa: ARG002 - runs when the main thread can
        self.requested = True
        self._answered = True  # it runs Python code, so it will see the flag: nothing to rescue
        if self.on_signal is not None:
            self.on_signal()

    # ------------------------------------------------------------------ the watcher
    def _watch(self) -> None:
        while True:
            timeout = None
            if self._signalled_at is not None and not self._answered:
                timeout = max(0.0, self._signalled_at + self.grace() - time.monotonic())
            ready, _, _ = select.select([self._rx], [], [], timeout)
            if not ready:
                if self._answered:  # answered while the timer ran out
                    continue
                seconds = time.monotonic() - self._signalled_at
                self.give_up(f"the step in progress did not end within {seconds:.0f} s of "
                             f"{signal.Signals(self._signal).name} (stuck in native code?)")
                continue
            try:
                data = self._rx.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum not in SIGNALS:
                    continue
                if self._signal is None:
                    self._signal, self._signalled_at, self.requested = signum, time.monotonic(), True
                    say(f"simclr: {signal.Signals(signum).name}: stopping after this step "
                        f"(send it again to stop at once)")
                elif time.monotonic() - self._signalled_at < DUPLICATE_S:
                    continue  # one stop delivered twice (Slurm signals the job step and the batch shell forwards)
                else:
                    self.give_up(f"stopped at once by a second {signal.Signals(signum).name}", signum)

    def give_up(self, why: str, signum: int | None = None) -> None:
        """Record the stop, show where every thread is, and end the process now."""
        # straight to file descriptor 2: the stuck main thread may hold sys.stderr's lock
        with self._lock:
            signum = signum or self._signal or signal.SIGTERM
            say(f"simclr: {why}")
            for fd in output_fds():
                faulthandler.dump_traceback(file=fd, all_threads=True)
            try:
                note = self.on_give_up(why) if self.on_give_up is not None else None
                if note:
                    say(f"simclr: {note}")
            except BaseException as e:  # noqa: BLE001 - the exit below must happen whatever this raises
                say(f"simclr: could not record the stop: {e}")
            os._exit(128 + int(signum))


def output_fds() -> list[int]:
    """File descriptor 2, and the run's stdout.log where ``core.runs.output.tee_to`` copies stderr into it."""
    import sys
    copies = getattr(sys.stderr, "copy_fds", None)  # reading the attribute takes no lock
    return [2] + (copies() if callable(copies) else [])


def say(line: str) -> None:
    for fd in output_fds():
        try:
            os.write(fd, (line + "\n").encode(errors="replace"))
        except OSError:
            pass
