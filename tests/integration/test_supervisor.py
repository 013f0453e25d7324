"""The supervisor's children: spawned fresh, handed the whole Config, tied to its life."""

from __future__ import annotations

import os
import pickle
import signal
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from meshstream_zmq.config import Config
from services import supervisor
from tests.integration.supervisor_probe import probe


def every_field_changed(run_dir: Path) -> Config:
    """A Config whose every field differs from its default: a field that fails to reach a
    child (as any field the supervisor did not copy into argv/env used to) shows up."""
    default = Config()
    values: dict[str, Any] = {}
    for f in fields(Config):
        value = getattr(default, f.name)
        if isinstance(value, bool):
            values[f.name] = not value
        elif isinstance(value, int):
            values[f.name] = value + 3
        elif isinstance(value, float):
            values[f.name] = value + 0.25
        else:
            values[f.name] = f"x-{f.name}"
    values.update(run_dir=str(run_dir), gateways=3 if default.gateways == 2 else 2,
                  metrics_port=41000, log_level="debug")  # no port is opened: the mains are stubs
    config = Config(**values)
    assert all(getattr(config, f.name) != getattr(default, f.name) for f in fields(Config))
    return config


def test_each_child_entry_receives_the_supervisors_whole_config(tmp_path: Path) -> None:
    config = every_field_changed(tmp_path)
    kids = supervisor.children(config, ["echo"])
    try:
        for kid in kids:
            kid.entry = probe
            kid.start()
        for kid in kids:
            kid.proc.join(60)
            assert kid.proc.exitcode == 0, kid.name
    finally:
        supervisor.shutdown(kids)  # SIGTERM, then SIGKILL, any survivor

    def seen(name: str) -> dict[str, Any]:
        got: dict[str, Any] = pickle.loads((tmp_path / f"{name}.pickle").read_bytes())
        assert got["title"] == f"meshstream: {name}"
        assert got["pdeathsig"] == signal.SIGTERM and got["parent_alive"], got
        return got

    n = config.gateways
    # the whole config, with how often this child was restarted (0: its first start)
    config = replace(config, restarts=0)
    assert seen("processor")["args"] == (config,)
    assert seen("processor")["entry"] == "processor.main"
    for i in range(1, n + 1):
        got = seen(f"gateway {i}")
        assert got["entry"] == "gateway.main"
        assert got["args"] == (replace(config, metrics_port=41000 + i), i)
    got = seen("watcher echo")
    assert got["entry"] == "run_watcher"
    assert got["args"] == ("echo", replace(config, metrics_port=41000 + n + 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{kid.name}.pickle" for kid in kids)


def test_metrics_stay_off_for_every_child_when_the_base_port_is_0(tmp_path: Path) -> None:
    config = Config(gateways=2, metrics_port=0, run_dir=str(tmp_path))
    assert {kid.config.metrics_port for kid in supervisor.children(config, ["echo"])} == {0}


def test_run_dir_is_resolved_once_for_all_children() -> None:
    config = Config(gateways=2, port=18999)
    dirs = {kid.config.run_dir for kid in supervisor.children(config, ["echo"])}
    assert dirs == {config.resolved_run_dir}


def test_a_child_whose_supervisor_is_already_gone_exits_at_once(tmp_path: Path) -> None:
    """Spawned, but its parent is not the one it was started for (as when the supervisor
    died before the child could ask for PR_SET_PDEATHSIG): it exits before the role starts."""
    config = Config(gateways=1, run_dir=str(tmp_path), metrics_port=0)
    kid = supervisor.Child("processor", "", config)
    proc = supervisor.SPAWN.Process(target=supervisor.child_main, daemon=True,
                                    args=("processor", "", config, os.getpid() + 10**7))
    kid.proc = proc
    try:
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
        assert not list(tmp_path.iterdir()), "the processor started (it creates its IPC sockets)"
    finally:
        supervisor.shutdown([kid])


def test_a_stopped_cluster_leaves_no_run_directory_behind(tmp_path: Path) -> None:
    """The run directory (sockets, ready files, pid file) goes with the supervisor; a file
    it did not make keeps it (and that file) as it is."""
    from tests.conftest import Cluster

    cluster = Cluster(tmp_path, gateways=2)
    run_dir = Path(cluster.run_dir)
    assert (run_dir / "supervisor.pid").exists()
    cluster.stop()
    assert not run_dir.exists(), list(run_dir.iterdir())
    (tmp_path / "second").mkdir()
    other = Cluster(tmp_path / "second", gateways=1)
    mine = Path(other.run_dir) / "notes.txt"
    mine.write_text("mine")
    other.stop()
    assert [p.name for p in Path(other.run_dir).iterdir()] == ["notes.txt"]


def test_the_embedded_log_is_the_first_child_and_the_processor_is_pointed_at_it(tmp_path: Path) -> None:
    config = Config(gateways=1, run_dir=str(tmp_path), log="embedded")
    kids = supervisor.children(config, ["echo"])
    server = kids[0]
    assert isinstance(server, supervisor.LogServer) and server.name == "log" and server.port
    url = f"nats://127.0.0.1:{server.port}"
    assert [(k.name, k.config.log) for k in kids[1:]] == [
        ("processor", url), ("gateway 1", url), ("watcher echo", url)]
    # no processor here (a gateway host): no log either
    assert [k.name for k in supervisor.children(config, [], processor=False)] == ["gateway 1"]
    assert not any(isinstance(k, supervisor.LogServer)
                   for k in supervisor.children(replace(config, log="off"), []))
