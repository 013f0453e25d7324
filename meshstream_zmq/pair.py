"""A primary/backup processor pair (the ZeroMQ guide's Binary Star), as a pure state machine.

Two processors on two hosts; gateways and watchers know both (`--tcp` and `--peer`) and
talk to one at a time, moving to the other when theirs falls silent. Room state is soft
(rebuilt from the gateways' and watchers' hellos), so nothing is copied between the two:
the pair only has to agree which one serves.

The processors tell each other their state every heartbeat (`PairBeat` on PORT+3):

- A processor starts STARTING and serves nobody. Hearing an ACTIVE peer it becomes
  PASSIVE; the primary hearing a peer that is not active (STARTING or PASSIVE) becomes
  ACTIVE; the backup waits for the primary.
- A PASSIVE processor becomes ACTIVE when its peer restarts (STARTING: the peer lost its
  state; it will find us active and become passive) or when both are passive (the primary
  then takes the lead), and on a gateway's or watcher's hello once the peer has been silent
  for `timeout`. Both conditions: a peer that is merely cut off from us, while the gateways
  still reach it, sends nobody to us, so we stay passive (no split brain).
- A hello reaching a processor that is not active and whose peer is alive is not served:
  the gateway or watcher hears nothing and tries the other one again.
- Every takeover raises the term. Two ACTIVE processors that hear each other (a cut that
  healed) keep the one with the higher term (the primary on a tie): the other becomes
  PASSIVE and drops its state; its gateways fall silent and move over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class State(Enum):
    STARTING = "starting"
    ACTIVE = "active"
    PASSIVE = "passive"


@dataclass
class Pair:
    backup: bool  # started as the backup (else the primary)
    timeout: float  # the peer's silence after which it counts as dead
    now: float  # when this processor started (the peer's silence is counted from here)
    state: State = State.STARTING
    term: int = 0
    peer_state: State | None = None  # as last heard (None: never)
    peer_term: int = 0
    peer_heard: float = field(init=False)
    yielding_until: float = 0.0  # stepped down for a switchover: not taking the lead back before

    def __post_init__(self) -> None:
        self.peer_heard = self.now

    @property
    def role(self) -> str:
        return "backup" if self.backup else "primary"

    @property
    def active(self) -> bool:
        return self.state is State.ACTIVE

    def peer_alive(self, now: float) -> bool:
        return now - self.peer_heard < self.timeout

    def peer_beat(self, state: str, term: int, now: float, handover: bool = False) -> State | None:
        """The peer's PairBeat: the new state if this one changes, else None. `handover`:
        the peer stepped down for a planned switchover (with a log): a passive one takes
        over at once."""
        try:
            peer = State(state)
        except ValueError:
            return None  # not a state we know: ignored, like silence
        self.peer_heard, self.peer_state, self.peer_term = now, peer, term
        if self.state is State.STARTING:
            if peer is State.ACTIVE:
                return self._become(State.PASSIVE)
            if not self.backup:
                return self._become(State.ACTIVE)
        elif self.state is State.PASSIVE:
            if now < self.yielding_until:
                return None  # it handed over: the peer's beats from before say nothing yet
            if peer is State.STARTING or (peer is State.PASSIVE and (handover or not self.backup)):
                return self._become(State.ACTIVE)
        elif peer is State.ACTIVE and (term > self.term or (term == self.term and self.backup)):
            return self._become(State.PASSIVE)  # two active: the later takeover stays
        return None

    def hello(self, now: float) -> bool:
        """A gateway or watcher says hello: whether this processor serves it (which may make
        it ACTIVE: when its peer has been silent for the timeout)."""
        if self.state is not State.ACTIVE and not self.peer_alive(now):
            self._become(State.ACTIVE)
        return self.state is State.ACTIVE

    def step_down(self, yielding_until: float = 0.0) -> None:
        """No longer active whatever the beats say: with a log, another processor took it
        over (this one's appends were fenced), or this one could not; or it hands over
        (a switchover: until `yielding_until` it does not take the lead back)."""
        self.state = State.PASSIVE
        self.yielding_until = max(self.yielding_until, yielding_until)

    def _become(self, state: State) -> State:
        if state is State.ACTIVE:
            self.term = max(self.term, self.peer_term) + 1
        self.state = state
        return state
