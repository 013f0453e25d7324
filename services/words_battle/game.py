"""One Words Battle room as a pure state machine.

A `Game` takes what happened (a client joined, sent an action, left; a timer fired)
and returns what must happen next as a list of *effects*: messages to send, clients
to remove from the room, timers to start or cancel, and the end of the game. It
never reads a clock, sleeps or touches a socket, so a whole game is played in a
unit test by calling methods and firing the timers it asked for.

The frames it produces are those of the original game (listed in
docs/words-battle.md), so the original web client plays against it unchanged. Its
defects are not reproduced: only the room maker starts a friend game, only the
current player's attempts count, `leave-room` works, late or surplus joiners are
refused and removed, every pending timer is cancelled when the game ends, and bad
input gets an `error` reply instead of crashing anything.

Decisions the original protocol leaves open (also in docs/words-battle.md):

- The *slug* of a player is its client ID; lists are sorted by it.
- Every client in the room is a player from the moment it joins. Until it sends
  `set-client-name` it is called "Guest" (so chat before a name works).
- Names are trimmed, inner whitespace collapsed, non-printable characters and
  ``< > &`` removed (bot messages are HTML), and must then be 2-20 characters;
  anything else (including a non-string) becomes "Guest".
- Random rooms have no room maker powers: nobody gets `is-room-maker` there and
  `room-settings` / `start-the-game` are refused with `not-room-maker`.
- A friend game needs at least two players to start (`not-enough-players`).
- If a client joins after the last `client-list-notify`, the game sends a fresh
  list just before it starts, so that `clientstats` always matches the list every
  player holds.
- Timer values shown to clients are whole seconds, never beyond the end of the game.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

BOT: Final = "bot-of-the-room"
GUEST: Final = "Guest"
FIRST_LETTER: Final = "w"
COLOURS: Final = ("yellow", "red", "orange", "blue", "purple", "pink", "white")

RANDOM_ROOM_LIMIT: Final = 2
MIN_PLAYERS: Final = 2
MAX_PLAYERS: Final = 10
MIN_DURATION: Final = 10
MAX_DURATION: Final = 600
NAME_MIN: Final = 2
NAME_MAX: Final = 20

Body = dict[str, Any]


class GameErrorCode:
    """Stable codes of the `error` replies a game room sends (to the offending client only)."""

    UNKNOWN_ACTION: Final = "unknown-action"
    NOT_A_PLAYER: Final = "not-a-player"  # the sender is not a player of this room
    NOT_ROOM_MAKER: Final = "not-room-maker"  # settings / start by anyone but a friend room's maker
    NOT_YOUR_TURN: Final = "not-your-turn"  # attempt-word outside the sender's own turn
    BAD_SETTINGS: Final = "bad-settings"  # room-settings values out of range or unreadable
    BAD_MESSAGE: Final = "bad-message"  # chat or attempt that is not a non-empty string
    GAME_STARTED: Final = "game-started"  # settings / start once the game has begun (or ended)
    NOT_ENOUGH_PLAYERS: Final = "not-enough-players"  # start with fewer than two players


# ---------------------------------------------------------------- effects


@dataclass(frozen=True)
class Send:
    """One outbound client message."""

    action: str
    body: Body  # message_body
    to_room: bool = True  # True: every player in the room; False: only `clients`
    clients: tuple[str, ...] = ()
    sender: str = BOT
    is_target_client: bool = False
    target: str | None = None  # None means the room name; know-yourself targets the client ID


@dataclass(frozen=True)
class Kick:
    """The client is no longer in the room (the host removes its membership)."""

    client: str


@dataclass(frozen=True)
class StartTimer:
    """Call `Game.on_timer(token, now)` after `delay` seconds (already scaled)."""

    token: int
    delay: float


@dataclass(frozen=True)
class CancelTimer:
    token: int


@dataclass(frozen=True)
class GameOver:
    """This game is done for good; the host may drop the `Game` and close the room."""


Effect = Send | Kick | StartTimer | CancelTimer | GameOver


@dataclass
class Timing:
    """Every duration of the game, in seconds, scaled by one factor (tests play fast)."""

    scale: float = 1.0
    greeting_delay: float = 1.0  # room-bot-greetings -> bot greeting
    chat_delay: float = 1.0  # greeting -> chat-phase message-by-bot
    chat_phase: float = 10.0
    turn: float = 10.0  # first turn timer
    next_turn: float = 11.0  # later turns timer value shown
    announce_delay: float = 1.0  # "turn ended" -> next message-by-bot

    def __call__(self, seconds: float) -> float:
        return seconds * self.scale


# ---------------------------------------------------------------- judging


class Verdict(Enum):
    CORRECT = "correct"
    WRONG_LETTER = "wrong-letter"
    NOT_A_WORD = "not-a-word"
    ALREADY_USED = "already-used"


def normalise_word(text: str) -> str:
    """What an attempt is judged as: the client lower-cases, but other clients may not."""
    return text.strip().lower()


def judge(word: str, letter: str, words: Collection[str], used: Collection[str]) -> Verdict:
    """Judge an attempt: right first letter, in the dictionary, not used before in this game."""
    w = normalise_word(word)
    if not letter or not w.startswith(letter):
        return Verdict.WRONG_LETTER
    if w not in words:
        return Verdict.NOT_A_WORD
    if w in used:
        return Verdict.ALREADY_USED
    return Verdict.CORRECT


_NAME_DROP = re.compile(r"[<>&]")
_SHOWABLE_WORD = re.compile(r"[a-z]{1,40}")


def clean_name(name: object) -> str:
    """A display name from whatever the client sent; "Guest" when unusable."""
    if not isinstance(name, str):
        return GUEST
    # Bot messages are HTML: a name must not carry markup into them.
    text = _NAME_DROP.sub("", "".join(ch for ch in name if ch.isprintable() or ch.isspace()))
    text = " ".join(text.split())
    return text if NAME_MIN <= len(text) <= NAME_MAX else GUEST


def _parse_setting(value: object) -> int | None:
    """Settings arrive as strings ("120"); accept plain ints too, nothing else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdecimal() and len(text) <= 6:
            return int(text)
    return None


# ---------------------------------------------------------------- the game


class Phase(Enum):
    WAITING = "waiting"  # players join, set names; the maker may change settings
    GREETING = "greeting"  # started: greetings sent, chat phase not yet opened
    CHAT = "chat"  # everyone may chat, nobody's turn
    TURN = "turn"  # one player may attempt a word
    BETWEEN = "between"  # a turn ended; the next is announced after announce_delay
    OVER = "over"


class _Timer(Enum):
    GREETING = "greeting"
    CHAT = "chat"
    FIRST_TURN = "first-turn"
    TURN = "turn"
    ANNOUNCE = "announce"
    GAME_END = "game-end"


@dataclass
class _Player:
    slug: str
    color: str
    name: str = GUEST
    score: int = 0

    def public(self) -> Body:
        return {"color": self.color, "name": self.name, "score": self.score, "slug": self.slug}


class Game:
    """One Words Battle room.

    Every method takes the acting client (or timer token) and the current time and
    returns the effects, in order. `now` only serves values shown to clients (the
    time left); every wait is a `StartTimer` the host carries out. A timer whose token
    is no longer pending (cancelled, already fired, or unknown) is ignored.

    Random rooms always hold `RANDOM_ROOM_LIMIT` (2) players, whatever
    `player_limit` says, and start by themselves once both have set a name.
    """

    def __init__(self, room: str, *, random_room: bool, words: Collection[str], timing: Timing,
                 player_limit: int = 3, game_duration: int = 60) -> None:
        if player_limit < MIN_PLAYERS:
            raise ValueError(f"player_limit must be at least {MIN_PLAYERS}")
        if game_duration <= 0:
            raise ValueError("game_duration must be positive")
        self.room = room
        self.random_room = random_room
        self.words = words  # lower-case words; see dictionary.word_set
        self.timing = timing
        self.player_limit = RANDOM_ROOM_LIMIT if random_room else player_limit
        self.game_duration = game_duration
        self._players: dict[str, _Player] = {}  # in join order: the maker hand-over follows it
        self._named: set[str] = set()  # sent set-client-name: a random room starts when both have
        self._maker: str | None = None
        self._phase = Phase.WAITING
        self._began = False  # an emptied room is over without ever having started
        self._letter = ""
        self._turn: str | None = None  # whose turn it is (Phase.TURN only)
        self._last_turn: str | None = None  # whose turn ended last: the next one follows it
        self._result = ""  # how the last turn went, for the next announcement
        self._used: list[str] = []
        self._used_set: set[str] = set()
        self._timers: dict[int, _Timer] = {}
        self._next_token = 1
        self._ends_at = 0.0
        self._phase_ends_at = 0.0  # when the chat phase or the current turn runs out
        self._listed: tuple[str, ...] = ()  # slugs of the last client-list-notify

    # ------------------------------------------------------------ state

    @property
    def finished(self) -> bool:
        return self._phase is Phase.OVER

    @property
    def started(self) -> bool:
        """The game began (it may be over by now)."""
        return self._began

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def players(self) -> list[str]:
        """Client IDs of the players, by slug."""
        return sorted(self._players)

    @property
    def maker(self) -> str | None:
        return self._maker

    @property
    def current_player(self) -> str | None:
        return self._turn

    @property
    def letter(self) -> str:
        return self._letter

    @property
    def used_words(self) -> list[str]:
        return list(self._used)

    @property
    def accepting_players(self) -> bool:
        """Whether a join would succeed now (waiting, and below the player limit)."""
        return self._phase is Phase.WAITING and len(self._players) < self.player_limit

    def scores(self) -> dict[str, int]:
        return {slug: p.score for slug, p in self._players.items()}

    def roster(self) -> list[Body]:
        """The players as clients see them: [{color, name, score, slug}] by slug."""
        return self._stats()

    # ------------------------------------------------------------ client actions

    def handle(self, client: str, action: str, body: Body, now: float) -> list[Effect]:
        """Dispatch one client action sent to this room."""
        if not isinstance(body, dict):
            body = {}  # a missing or malformed body reads as empty
        match action:
            case "set-client-name":
                return self.set_name(client, body.get("setname"), now)
            case "room-settings":
                return self.settings(client, body, now)
            case "start-the-game":
                return self.start(client, now)
            case "send-message":
                return self.chat(client, body.get("message"), now)
            case "attempt-word":
                return self.attempt(client, body.get("message"), now)
            case "leave-room":
                return self.leave(client, now)
        return [self._error(client, GameErrorCode.UNKNOWN_ACTION,
                            f"unknown action {action!r} in a Words Battle room")]

    def join(self, client: str, now: float) -> list[Effect]:
        """A client entered the room: make it a player, or refuse it (message + Kick)."""
        if client in self._players:
            return []  # a repeated join changes nothing
        if self._phase is not Phase.WAITING:
            reason = "The game is over." if self.finished else "The game has already started."
            return self._refuse(client, reason)
        if len(self._players) >= self.player_limit:
            return self._refuse(client, f"The room is full ({self.player_limit} players).")
        self._players[client] = _Player(slug=client, color=self._free_colour())
        effects: list[Effect] = []
        if self.random_room:
            # Before know-yourself: the client answers that with set-client-name
            # addressed to the room name it learns here.
            effects.append(Send("found-random-room-notify", {"roomname": self.room},
                                to_room=False, clients=(client,)))
        effects.append(Send("join-room-notify", {"newmessage": f"{client} joined the room"},
                            sender=client))
        effects.append(Send("know-yourself", {"sender": client}, to_room=False, clients=(client,),
                            is_target_client=True, target=client))
        if self._maker is None:
            self._maker = client
            if not self.random_room:
                effects.append(self._maker_notice())
        return effects

    def set_name(self, client: str, name: object, now: float) -> list[Effect]:
        """Register the player's display name (see `clean_name`); the room gets the new list."""
        player = self._players.get(client)
        if player is None:
            return [self._not_a_player(client)]
        player.name = clean_name(name)
        self._named.add(client)
        effects: list[Effect] = [self._client_list()]
        if (self.random_room and self._phase is Phase.WAITING
                and len(self._players) == self.player_limit and self._named >= set(self._players)):
            effects += self._begin(now)
        return effects

    def settings(self, client: str, body: Body, now: float) -> list[Effect]:
        """The friend room maker changes the player limit and/or the game duration."""
        refusal = self._check_maker_action(client)
        if refusal is not None:
            return [refusal]
        if not isinstance(body, dict):
            body = {}
        limit, duration = self.player_limit, self.game_duration
        problems = []
        if "player_limit" in body:
            value = _parse_setting(body["player_limit"])
            if value is None or not MIN_PLAYERS <= value <= MAX_PLAYERS:
                problems.append(f"player limit must be {MIN_PLAYERS} to {MAX_PLAYERS}")
            elif value < len(self._players):
                problems.append(f"{len(self._players)} players are already in the room")
            else:
                limit = value
        if "game_duration" in body:
            value = _parse_setting(body["game_duration"])
            if value is None or not MIN_DURATION <= value <= MAX_DURATION:
                problems.append(f"game duration must be {MIN_DURATION} to {MAX_DURATION} seconds")
            else:
                duration = value
        if "player_limit" not in body and "game_duration" not in body:
            problems.append("send player_limit and/or game_duration")
        if problems:
            return [self._error(client, GameErrorCode.BAD_SETTINGS, "; ".join(problems))]
        self.player_limit, self.game_duration = limit, duration
        # The client reads "<n> players" and "<n> seconds" back out of this text.
        text = f"Room settings applied: up to {limit} players, game duration {duration} seconds."
        return [Send("room-setting-applied", {"message": text})]

    def start(self, client: str, now: float) -> list[Effect]:
        """The friend room maker starts the game."""
        refusal = self._check_maker_action(client)
        if refusal is not None:
            return [refusal]
        if len(self._players) < MIN_PLAYERS:
            return [self._error(client, GameErrorCode.NOT_ENOUGH_PLAYERS,
                                f"at least {MIN_PLAYERS} players are needed to start")]
        return self._begin(now)

    def chat(self, client: str, text: object, now: float) -> list[Effect]:
        """Relay a chat line to the room, at any time (before a name is set it comes from "Guest")."""
        player = self._players.get(client)
        if player is None:
            return [self._not_a_player(client)]
        if not isinstance(text, str) or not text.strip():
            return [self._error(client, GameErrorCode.BAD_MESSAGE, "message must be a non-empty string")]
        return [self._chat_line(player, text)]

    def attempt(self, client: str, word: object, now: float) -> list[Effect]:
        """The current player plays a word: echoed as chat, judged, and the turn ends."""
        player = self._players.get(client)
        if player is None:
            return [self._not_a_player(client)]
        if self._phase is not Phase.TURN or client != self._turn:
            return [self._error(client, GameErrorCode.NOT_YOUR_TURN, "it is not your turn")]
        if not isinstance(word, str) or not word.strip():
            return [self._error(client, GameErrorCode.BAD_MESSAGE, "message must be a non-empty string")]
        effects: list[Effect] = [self._chat_line(player, word)]
        verdict = judge(word, self._letter, self.words, self._used_set)
        w = normalise_word(word)
        # Only plain words are quoted back: the bot's messages are HTML.
        shown = f"<b>{w}</b>" if _SHOWABLE_WORD.fullmatch(w) else "That"
        if verdict is Verdict.CORRECT:
            player.score += 1
            self._used.append(w)
            self._used_set.add(w)
            self._letter = w[-1]
            result = f"<b>{player.name}</b> scores with {shown}!"
        elif verdict is Verdict.WRONG_LETTER:
            result = f"{shown} does not start with <b>{self._letter.upper()}</b>."
        elif verdict is Verdict.NOT_A_WORD:
            result = f"{shown} is not in the dictionary."
        else:
            result = f"{shown} was already used."
        return effects + self._end_turn(player, result)

    def leave(self, client: str, now: float) -> list[Effect]:
        """The client left the room (leave-room or disconnect): it is dropped everywhere.

        The returned `Kick` lets the host make sure the membership is gone too.
        """
        player = self._players.pop(client, None)
        if player is None:
            return []
        self._named.discard(client)
        effects: list[Effect] = [Kick(client)]
        if not self._players:
            if not self.finished:
                self._phase = Phase.OVER
                effects += self._cancel_all()
                effects.append(GameOver())
            return effects
        if self._maker == client:
            self._maker = next(iter(self._players))  # the earliest joiner still here
            if self._phase is Phase.WAITING and not self.random_room:
                effects.append(self._client_list())
                effects.append(self._maker_notice())
                return effects
        if self.finished:
            return effects
        effects.append(self._client_list())
        if self._phase is Phase.WAITING:
            return effects
        if len(self._players) < MIN_PLAYERS:
            (last,) = self._players.values()
            return effects + self._finish(f"only {last.name} is left.")
        if self._phase is Phase.TURN and self._turn == client:
            effects += self._end_turn(player, f"<b>{player.name}</b> left the game.")
        return effects

    def rejoin(self, client: str, now: float) -> list[Effect]:
        """A player whose connection was lost is back (it resumed its session, seat and score
        kept): tell it, and it alone, the current state with the frames a player already
        understands, so that a page that missed anything, or holds stale countdowns, shows the
        game as it is now. Nothing changes and nobody else hears of it.

        - always `client-list-notify` (names, colours, scores);
        - waiting, and it is a friend room's maker: `is-room-maker`;
        - chat phase or a turn: `message-by-bot` with an empty `message` (no new bot line),
          the time left of the phase or turn, `clientstats`, `letter` and, in a turn,
          `whichclientturn`;
        - over: `room-bot-end-game` (the final ranking and words).
        Between turns and while greeting nothing more: the next announcement comes anyway.
        """
        if client not in self._players:
            return []
        to = (client,)
        effects: list[Effect] = [Send("client-list-notify", {"clientsinroomessage": self._stats()},
                                      to_room=False, clients=to)]
        if self._phase is Phase.WAITING:
            if self._maker == client and not self.random_room:
                effects.append(self._maker_notice())
        elif self._phase in (Phase.CHAT, Phase.TURN):
            body: Body = {"message": "", "timer": self._shown(self._phase_ends_at - now, now),
                          "clientstats": self._stats(), "letter": self._letter}
            if self._phase is Phase.TURN and self._turn is not None:
                body["whichclientturn"] = self._players[self._turn].public()
            else:
                body["letter"] = ""
            effects.append(Send("message-by-bot", body, to_room=False, clients=to))
        elif self._phase is Phase.OVER:
            effects.append(Send("room-bot-end-game", self._end_body(), to_room=False, clients=to))
        return effects

    # ------------------------------------------------------------ timers

    def on_timer(self, token: int, now: float) -> list[Effect]:
        """A timer the game asked for fired; stale or unknown tokens are ignored."""
        kind = self._timers.pop(token, None)
        if kind is None:
            return []
        match kind:
            case _Timer.GREETING:
                greeting = ("Hello everyone, I am the bot of this room! Say hello, then take turns: "
                            "give a word starting with the letter I name.")
                return [Send("send-message", {"message": greeting}),
                        self._start_timer(_Timer.CHAT, self.timing.chat_delay)]
            case _Timer.CHAT:
                self._phase = Phase.CHAT
                seconds = self.timing(self.timing.chat_phase)
                self._phase_ends_at = now + seconds
                body = {"message": "Chat phase: everyone may talk. The first turn comes next.",
                        "timer": self._shown(seconds, now), "clientstats": self._stats(), "letter": ""}
                return [Send("message-by-bot", body),
                        self._start_timer(_Timer.FIRST_TURN, self.timing.chat_phase)]
            case _Timer.FIRST_TURN:
                self._letter = FIRST_LETTER
                first = self._players[min(self._players)]
                text = (f"First turn: <b>{first.name}</b>, give a word starting with "
                        f"<b>{FIRST_LETTER.upper()}</b>.")
                return self._begin_turn(first, text, self.timing.turn, now)
            case _Timer.TURN:
                assert self._turn is not None  # a turn timer is pending only during a turn
                player = self._players[self._turn]
                return self._end_turn(player, f"<b>{player.name}</b> ran out of time.")
            case _Timer.ANNOUNCE:
                nxt = self._players[self._after(self._last_turn)]
                text = (f"{self._result}<br>Next: <b>{nxt.name}</b>, give a word starting with "
                        f"<b>{self._letter.upper()}</b>.")
                return self._begin_turn(nxt, text, self.timing.next_turn, now)
            case _Timer.GAME_END:
                return self._finish("time is up.")
        raise AssertionError(kind)  # pragma: no cover - every kind is matched above

    # ------------------------------------------------------------ internals

    def _begin(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if tuple(sorted(self._players)) != self._listed:
            # Someone joined since the last list: clientstats must match what they hold.
            effects.append(self._client_list())
        self._phase = Phase.GREETING
        self._began = True
        self._ends_at = now + self.timing(self.game_duration)
        effects.append(Send("room-bot-greetings", {"message": "welcome"}))
        effects.append(self._start_timer(_Timer.GAME_END, self.game_duration))
        effects.append(self._start_timer(_Timer.GREETING, self.timing.greeting_delay))
        return effects

    def _begin_turn(self, player: _Player, text: str, seconds: float, now: float) -> list[Effect]:
        self._phase = Phase.TURN
        self._turn = player.slug
        self._phase_ends_at = now + self.timing(seconds)
        body = {"message": text, "timer": self._shown(self.timing(seconds), now),
                "clientstats": self._stats(), "letter": self._letter, "whichclientturn": player.public()}
        return [Send("message-by-bot", body), self._start_timer(_Timer.TURN, seconds)]

    def _end_turn(self, player: _Player, result: str) -> list[Effect]:
        effects: list[Effect] = self._cancel(_Timer.TURN)
        self._phase = Phase.BETWEEN
        self._turn = None
        self._last_turn = player.slug
        self._result = result
        effects.append(Send("send-message", {"message": f"<b>{player.name}</b>'s turn ended."}))
        effects.append(self._start_timer(_Timer.ANNOUNCE, self.timing.announce_delay))
        return effects

    def _finish(self, reason: str) -> list[Effect]:
        effects: list[Effect] = self._cancel_all()
        self._phase = Phase.OVER
        self._turn = None
        effects.append(Send("send-message", {"message": f"Game ended: {reason}"}))
        effects.append(Send("room-bot-end-game", self._end_body()))
        effects.append(GameOver())
        return effects

    def _end_body(self) -> Body:
        ranking = sorted(self._players.values(), key=lambda p: (-p.score, p.slug))
        return {"message": self._verdict_text(ranking), "client_list": [p.public() for p in ranking],
                "word_list": list(self._used)}

    @staticmethod
    def _verdict_text(ranking: list[_Player]) -> str:
        top = ranking[0].score if ranking else 0
        if top == 0:
            return "Game over! Nobody scored this time."
        winners = [p.name for p in ranking if p.score == top]
        points = "point" if top == 1 else "points"
        if len(winners) == 1:
            return f"Game over! <b>{winners[0]}</b> wins with {top} {points}."
        return f"Game over! A tie between {', '.join(f'<b>{n}</b>' for n in winners)} with {top} {points}."

    def _after(self, slug: str | None) -> str:
        """The next player by slug after `slug` (who may have left), wrapping around."""
        order = sorted(self._players)
        if slug is not None:
            for candidate in order:
                if candidate > slug:
                    return candidate
        return order[0]

    def _check_maker_action(self, client: str) -> Send | None:
        if client not in self._players:
            return self._not_a_player(client)
        if self._phase is not Phase.WAITING:
            return self._error(client, GameErrorCode.GAME_STARTED, "the game has already started")
        if self.random_room or client != self._maker:
            return self._error(client, GameErrorCode.NOT_ROOM_MAKER, "only the room maker may do that")
        return None

    def _start_timer(self, kind: _Timer, seconds: float) -> StartTimer:
        token = self._next_token
        self._next_token += 1
        self._timers[token] = kind
        return StartTimer(token, self.timing(seconds))

    def _cancel(self, kind: _Timer) -> list[Effect]:
        tokens = [t for t, k in self._timers.items() if k is kind]
        for t in tokens:
            del self._timers[t]
        return [CancelTimer(t) for t in tokens]

    def _cancel_all(self) -> list[Effect]:
        effects: list[Effect] = [CancelTimer(t) for t in self._timers]
        self._timers.clear()
        return effects

    def _shown(self, seconds: float, now: float) -> int:
        # Whole seconds for the client's countdown, never past the end of the game.
        left = min(seconds, self._ends_at - now)
        return max(0, math.ceil(left - 1e-6))

    def _free_colour(self) -> str:
        taken = [p.color for p in self._players.values()]
        for colour in COLOURS:
            if colour not in taken:
                return colour
        return min(COLOURS, key=taken.count)  # more players than colours: reuse the rarest

    def _stats(self) -> list[Body]:
        return [self._players[slug].public() for slug in sorted(self._players)]

    def _client_list(self) -> Send:
        self._listed = tuple(sorted(self._players))
        return Send("client-list-notify", {"clientsinroomessage": self._stats()})

    def _maker_notice(self) -> Send:
        assert self._maker is not None
        return Send("is-room-maker", {"message": self._maker}, to_room=False, clients=(self._maker,))

    def _chat_line(self, player: _Player, text: str) -> Send:
        body = {"message": text, "useravatar": player.name[:2], "color": player.color}
        return Send("send-message", body, sender=player.slug)

    def _refuse(self, client: str, reason: str) -> list[Effect]:
        return [Send("fail-join-room-notify", {"message": reason}, to_room=False, clients=(client,)),
                Kick(client)]

    def _not_a_player(self, client: str) -> Send:
        return self._error(client, GameErrorCode.NOT_A_PLAYER, f"you are not a player in {self.room}")

    @staticmethod
    def _error(client: str, code: str, message: str) -> Send:
        return Send("error", {"code": code, "message": message}, to_room=False, clients=(client,))
