"""Runs in a child spawned by the supervisor, in place of `supervisor.child_main`: it swaps
each role's own `main` for a recorder, then runs the real `child_main`, so the test sees
exactly what the role's entry point would have been given."""

from __future__ import annotations

import ctypes
import os
import pickle
from pathlib import Path
from typing import Any

import setproctitle

from meshstream_zmq.config import Config

PR_GET_PDEATHSIG = 2


def pdeathsig() -> int:
    sig = ctypes.c_int(0)
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_GET_PDEATHSIG, ctypes.byref(sig))
    return sig.value


def probe(role: str, arg: int | str, config: Config, parent: int) -> None:
    from services import gateway, processor, supervisor, watchers

    def record(entry: str, *args: Any) -> None:
        seen = {"entry": entry, "args": args, "pdeathsig": pdeathsig(),
                "title": setproctitle.getproctitle(), "parent_alive": os.getppid() == parent}
        out = Path(config.run_dir) / f"{supervisor.role_title(role, arg)}.pickle"
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(seen))
        tmp.rename(out)

    processor.main = lambda config: record("processor.main", config)
    gateway.main = lambda config, index: record("gateway.main", config, index)
    watchers.run_watcher = lambda name, config: record("run_watcher", name, config) or 0
    supervisor.child_main(role, arg, config, parent)
