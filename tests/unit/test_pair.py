"""The processor pair's state machine (meshstream_zmq/pair.py): who serves, in every case
the operations doc promises."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshstream_zmq.pair import Pair, State

T = 2.0


def pair(now: float = 0.0) -> tuple[Pair, Pair]:
    return Pair(backup=False, timeout=T, now=now), Pair(backup=True, timeout=T, now=now)


def agreed() -> tuple[Pair, Pair]:
    """Both started at 0 and heard each other twice: the primary active."""
    primary, backup = pair()
    exchange(primary, backup, 0.5)
    exchange(primary, backup, 1.0)
    assert (primary.state, backup.state) == (State.ACTIVE, State.PASSIVE)
    return primary, backup


def exchange(a: Pair, b: Pair, now: float) -> None:
    """One heartbeat each way, as the PairBeats cross."""
    sa, ta, sb, tb = a.state.value, a.term, b.state.value, b.term
    a.peer_beat(sb, tb, now)
    b.peer_beat(sa, ta, now)


def test_both_start_the_primary_serves_the_backup_waits() -> None:
    primary, backup = pair()
    assert not primary.hello(0.1) and not backup.hello(0.1), "nobody serves before the pair agrees"
    exchange(primary, backup, 0.5)
    exchange(primary, backup, 1.0)
    assert (primary.state, backup.state) == (State.ACTIVE, State.PASSIVE)
    assert primary.hello(1.1) and not backup.hello(1.1)


def test_the_standby_takes_over_on_a_hello_once_the_active_is_silent() -> None:
    primary, backup = agreed()
    # the primary dies at 1.0: nothing more from it
    assert not backup.hello(1.0 + T - 0.1), "a hello within the timeout is not served"
    assert backup.state is State.PASSIVE
    assert backup.hello(1.0 + T), "the peer silent for the timeout: a hello makes it active"
    assert backup.state is State.ACTIVE and backup.term > primary.term


def test_a_cut_between_the_processors_alone_keeps_one_active() -> None:
    """The gateways still reach the primary, so nobody says hello to the backup: however
    long the cut, the backup stays passive."""
    primary, backup = agreed()
    for t in range(1, 60):
        assert primary.hello(float(t))  # the gateways' traffic goes on
    assert (primary.state, backup.state) == (State.ACTIVE, State.PASSIVE)


def test_the_old_primary_comes_back_as_the_standby() -> None:
    primary, backup = agreed()
    assert backup.hello(10.0)  # primary died; failover
    restarted = Pair(backup=False, timeout=T, now=11.0)
    exchange(restarted, backup, 11.5)
    assert (restarted.state, backup.state) == (State.PASSIVE, State.ACTIVE)
    assert not restarted.hello(11.6)


def test_a_passive_processor_whose_peer_restarts_takes_over() -> None:
    primary, backup = agreed()
    restarted = Pair(backup=False, timeout=T, now=1.2)  # within the timeout: never silent
    backup.peer_beat(restarted.state.value, restarted.term, 1.5)
    assert backup.state is State.ACTIVE
    restarted.peer_beat(backup.state.value, backup.term, 1.5)
    assert restarted.state is State.PASSIVE


def test_two_actives_after_a_healed_partition_keep_the_later_takeover() -> None:
    primary, backup = agreed()
    assert backup.hello(10.0)  # a real partition: some gateways reached only the backup
    assert primary.active and backup.active
    exchange(primary, backup, 20.0)  # healed
    assert (primary.state, backup.state) == (State.PASSIVE, State.ACTIVE)


def test_a_switchover_hands_over_and_the_old_active_does_not_take_the_lead_back() -> None:
    """`meshstream switchover` (with a log): the active steps down and says `handover`;
    the passive backup takes over at once; the old active, the primary, hears the backup's
    earlier passive beat and stays passive (it yields for a while), then passive for good."""
    primary, backup = agreed()
    primary.step_down(yielding_until=1.0 + T)
    assert backup.peer_beat(primary.state.value, primary.term, 1.1, handover=True) is State.ACTIVE
    assert primary.peer_beat("passive", 0, 1.1) is None  # crossed: sent before the handover
    exchange(primary, backup, 1.5)
    assert (primary.state, backup.state) == (State.PASSIVE, State.ACTIVE)
    assert backup.term > primary.term
    exchange(primary, backup, 1.0 + 2 * T)  # yielding over: it stays the standby
    assert (primary.state, backup.state) == (State.PASSIVE, State.ACTIVE)


def test_an_unknown_state_is_ignored() -> None:
    primary, backup = pair()
    assert primary.peer_beat("leader", 99, 0.5) is None
    assert primary.state is State.STARTING and primary.peer_heard == 0.0


EVENTS = st.lists(st.tuples(st.sampled_from(["beat", "hello-p", "hello-b", "restart-p",
                                             "restart-b"]), st.floats(0.05, 3.0)),
                  max_size=40)


@given(EVENTS)
@settings(max_examples=300, deadline=None)
def test_connected_processors_agree_on_exactly_one_active(events) -> None:
    """Whatever happens (hellos, restarts, silences), once the two have exchanged beats
    both ways twice over a working link, exactly one is active."""
    now = 0.0
    primary, backup = pair()
    for event, gap in events:
        now += gap
        if event == "beat":
            exchange(primary, backup, now)
            exchange(primary, backup, now)
            assert primary.active != backup.active
        elif event == "hello-p":
            primary.hello(now)
        elif event == "hello-b":
            backup.hello(now)
        elif event == "restart-p":
            primary = Pair(backup=False, timeout=T, now=now)
        else:
            backup = Pair(backup=True, timeout=T, now=now)
    exchange(primary, backup, now + 0.1)
    exchange(primary, backup, now + 0.2)
    assert primary.active != backup.active
