"""Words Battle game room: the pure state machine, driven by hand and by hypothesis."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.words_battle.dictionary import english_words, word_set
from services.words_battle.game import (
    BOT,
    COLOURS,
    CancelTimer,
    Effect,
    Game,
    GameErrorCode,
    GameOver,
    Kick,
    Phase,
    Send,
    StartTimer,
    Timing,
    Verdict,
    clean_name,
    judge,
)

WORDS = word_set(["world", "dog", "great", "tiger", "rabbit", "wolf", "flag", "golf", "water",
                  "rat", "tree", "eagle", "elephant", "wet", "table", "egg", "gate", "A", "b"])


class Table:
    """Plays a game: applies its effects, keeps its timers and a clock, records what was sent."""

    def __init__(self, game: Game) -> None:
        self.game = game
        self.now = 0.0
        self.timers: dict[int, float] = {}  # token -> due time
        self.kicked: list[str] = []
        self.over = False

    def apply(self, effects: list[Effect]) -> list[Effect]:
        for e in effects:
            if isinstance(e, StartTimer):
                assert e.token not in self.timers, "tokens are never reused"
                assert e.delay >= 0
                self.timers[e.token] = self.now + e.delay
            elif isinstance(e, CancelTimer):
                assert e.token in self.timers, "only pending timers are cancelled"
                del self.timers[e.token]
            elif isinstance(e, Kick):
                self.kicked.append(e.client)
            elif isinstance(e, GameOver):
                assert not self.over, "the game ends once"
                self.over = True
            else:
                assert isinstance(e, Send)
                assert e.to_room or e.clients, "a message goes somewhere"
        return effects

    def __getattr__(self, name: str) -> Any:
        # table.attempt("c1", "world") -> game.attempt("c1", "world", now)
        method = getattr(self.game, name)
        return lambda *args: self.apply(method(*args, self.now))

    def fire(self, token: int | None = None) -> list[Effect]:
        """Fire `token`, or the timer due first, advancing the clock to it."""
        if token is None:
            token = min(self.timers, key=lambda t: (self.timers[t], t))
        self.now = max(self.now, self.timers.pop(token))
        return self.apply(self.game.on_timer(token, self.now))

    def fire_until(self, action: str) -> list[Effect]:
        """Fire timers in order until one produces a Send of `action`; return that batch."""
        for _ in range(50):
            effects = self.fire()
            if any(isinstance(e, Send) and e.action == action for e in effects):
                return effects
        raise AssertionError(f"no {action} after 50 timers")


def sends(effects: list[Effect], action: str | None = None) -> list[Send]:
    return [e for e in effects if isinstance(e, Send) and (action is None or e.action == action)]


def one(effects: list[Effect], action: str) -> Send:
    found = sends(effects, action)
    assert len(found) == 1, f"expected one {action}, got {effects}"
    return found[0]


def error_code(effects: list[Effect], client: str) -> str:
    (err,) = effects
    assert isinstance(err, Send) and err.action == "error"
    assert not err.to_room and err.clients == (client,)
    assert err.sender == BOT
    return str(err.body["code"])


def new_game(random_room: bool = False, limit: int = 3, duration: int = 60, **timing: float) -> Table:
    return Table(Game("room1", random_room=random_room, words=WORDS, timing=Timing(**timing),
                      player_limit=limit, game_duration=duration))


def friend_table(*names: tuple[str, str], limit: int = 3, duration: int = 60, start: bool = True) -> Table:
    """A friend room with these (client, name) players, the first being the maker."""
    t = new_game(limit=max(limit, len(names)), duration=duration)
    for client, _ in names:
        t.join(client)
    for client, name in names:
        t.set_name(client, name)
    if start:
        t.start(names[0][0])
    return t


def to_first_turn(t: Table) -> list[Effect]:
    """From the start through the chat phase to the first turn; the batch that opened it."""
    t.fire_until("message-by-bot")  # the chat phase
    return t.fire_until("message-by-bot")


def attempt_and_announce(t: Table, client: str, word: str) -> tuple[list[Effect], Send]:
    """Attempt, then fire the announce timer: (effects of the attempt, the next message-by-bot)."""
    effects = t.attempt(client, word)
    return effects, one(t.fire_until("message-by-bot"), "message-by-bot")


def player(slug: str, name: str, color: str, score: int = 0) -> dict[str, Any]:
    return {"color": color, "name": name, "score": score, "slug": slug}


# ---------------------------------------------------------------- a player back after a drop


def test_a_player_back_mid_turn_gets_the_list_and_the_turn_with_the_time_left() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"))
    to_first_turn(t)
    attempt_and_announce(t, "c1", "world")  # c1 scores; c2's turn on "d", 11 s
    t.now += 4
    effects = t.rejoin("c2")
    lst, turn = sends(effects)
    assert lst == Send("client-list-notify", {"clientsinroomessage": [
        player("c1", "Alice", "yellow", 1), player("c2", "Bob", "red")]}, to_room=False, clients=("c2",))
    assert turn.action == "message-by-bot" and not turn.to_room and turn.clients == ("c2",)
    assert turn.body == {"message": "", "timer": 7, "letter": "d",
                         "clientstats": [player("c1", "Alice", "yellow", 1), player("c2", "Bob", "red")],
                         "whichclientturn": player("c2", "Bob", "red")}
    assert not [e for e in effects if not isinstance(e, Send)], "no timer, no kick"
    # its turn still times out as usual
    ran_out = one(t.fire_until("message-by-bot"), "message-by-bot")
    assert "ran out of time" in ran_out.body["message"]


def test_a_player_back_in_the_chat_phase_gets_its_time_left_and_no_letter() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"))
    t.fire_until("message-by-bot")  # the chat phase: 10 s
    t.now += 2.5
    (_, chat) = sends(t.rejoin("c1"))
    assert chat.body["timer"] == 8 and chat.body["letter"] == "" and "whichclientturn" not in chat.body


def test_a_player_back_before_the_start_and_after_the_end() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), start=False)
    maker = sends(t.rejoin("c1"))
    assert [s.action for s in maker] == ["client-list-notify", "is-room-maker"]
    assert [s.action for s in sends(t.rejoin("c2"))] == ["client-list-notify"]
    t.start("c1")
    assert [s.action for s in sends(t.rejoin("c1"))] == ["client-list-notify"]  # greeting: the rest comes
    t.fire_until("room-bot-end-game")
    (_, end) = sends(t.rejoin("c2"))
    assert end.action == "room-bot-end-game" and end.clients == ("c2",)
    assert end.body["client_list"] == [player("c1", "Alice", "yellow"), player("c2", "Bob", "red")]
    assert t.rejoin("c9") == [], "not a player: nothing"


# ---------------------------------------------------------------- judging


def test_judge_accepts_a_dictionary_word_with_the_letter() -> None:
    assert judge("world", "w", WORDS, set()) is Verdict.CORRECT


def test_judge_is_case_and_space_insensitive() -> None:
    assert judge("  WoRlD ", "w", WORDS, set()) is Verdict.CORRECT


@pytest.mark.parametrize(("word", "letter", "used", "verdict"), [
    ("dog", "w", set(), Verdict.WRONG_LETTER),
    ("wxyzzy", "w", set(), Verdict.NOT_A_WORD),
    ("world", "w", {"world"}, Verdict.ALREADY_USED),
    ("WORLD", "w", {"world"}, Verdict.ALREADY_USED),
    ("", "w", set(), Verdict.WRONG_LETTER),
    ("w orld", "w", set(), Verdict.NOT_A_WORD),
])
def test_judge_rejects(word: str, letter: str, used: set[str], verdict: Verdict) -> None:
    assert judge(word, letter, WORDS, used) is verdict


def test_judge_checks_the_letter_before_the_dictionary() -> None:
    # "xylophone" is not in WORDS, but the letter is what is wrong first.
    assert judge("xylophone", "w", WORDS, set()) is Verdict.WRONG_LETTER


# ---------------------------------------------------------------- dictionary


def test_word_set_normalises_small_lists() -> None:
    raw: list[Any] = ["Hello", " world ", "two words", "x-ray", "b", "I", "", "naïve", None, 3]
    assert word_set(raw) == {"hello", "world", "i"}


def test_real_dictionary_is_loaded_once_and_lower_case() -> None:
    words = english_words()
    assert english_words() is words and word_set() is words
    assert len(words) > 200_000
    assert {"world", "dog", "wolf", "apple", "a", "i"} <= words
    assert "b" not in words and "wxyzzy" not in words
    assert all(re.fullmatch(r"[a-z]+", w) for w in words)


def test_a_game_with_the_real_dictionary() -> None:
    t = Table(Game("r", random_room=False, words=english_words(), timing=Timing()))
    t.join("a")
    t.join("b")
    t.start("a")
    to_first_turn(t)
    _, nxt = attempt_and_announce(t, "a", "Window")
    assert nxt.body["letter"] == "w"
    _, nxt = attempt_and_announce(t, "b", "wolf")
    assert nxt.body["letter"] == "f"
    assert t.game.scores() == {"a": 1, "b": 1}


# ---------------------------------------------------------------- joining


def test_first_joiner_of_a_friend_room_is_told_it_is_the_maker() -> None:
    t = new_game()
    effects = t.join("c1")
    assert effects == [
        Send("join-room-notify", {"newmessage": "c1 joined the room"}, sender="c1"),
        Send("know-yourself", {"sender": "c1"}, to_room=False, clients=("c1",), is_target_client=True,
             target="c1"),
        Send("is-room-maker", {"message": "c1"}, to_room=False, clients=("c1",)),
    ]
    assert t.game.maker == "c1"
    assert t.join("c2") == [
        Send("join-room-notify", {"newmessage": "c2 joined the room"}, sender="c2"),
        Send("know-yourself", {"sender": "c2"}, to_room=False, clients=("c2",), is_target_client=True,
             target="c2"),
    ]
    assert t.game.players == ["c1", "c2"]


def test_random_room_join_tells_the_room_name_before_know_yourself() -> None:
    t = new_game(random_room=True)
    effects = t.join("c9")
    assert [e.action for e in sends(effects)] == ["found-random-room-notify", "join-room-notify",
                                                  "know-yourself"]
    found = effects[0]
    assert found == Send("found-random-room-notify", {"roomname": "room1"}, to_room=False, clients=("c9",))
    assert t.game.maker == "c9"  # the host's notion; it grants nothing in a random room


def test_repeated_join_changes_nothing() -> None:
    t = new_game()
    t.join("c1")
    assert t.join("c1") == []
    assert t.game.players == ["c1"]


def test_client_over_the_limit_is_refused_and_kicked() -> None:
    t = new_game(limit=2)
    t.join("c1")
    t.join("c2")
    effects = t.join("c3")
    fail = one(effects, "fail-join-room-notify")
    assert not fail.to_room and fail.clients == ("c3",)
    assert "full" in fail.body["message"]
    assert Kick("c3") in effects
    assert len(effects) == 2  # nobody else hears of it
    assert t.game.players == ["c1", "c2"]


def test_random_room_holds_two_whatever_the_limit() -> None:
    t = Table(Game("r", random_room=True, words=WORDS, timing=Timing(), player_limit=5))
    t.join("c1")
    t.join("c2")
    assert Kick("c3") in t.join("c3")


def test_latecomer_is_refused_and_kicked() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"))
    effects = t.join("c3")
    assert sends(effects)[0].action == "fail-join-room-notify"
    assert "started" in sends(effects)[0].body["message"]
    assert effects[-1] == Kick("c3")
    assert t.game.players == ["c1", "c2"]
    assert error_code(t.chat("c3", "hi"), "c3") == GameErrorCode.NOT_A_PLAYER


def test_client_list_is_sorted_by_slug_with_unique_colours() -> None:
    t = new_game()
    t.join("zed")
    t.join("amy")
    t.join("kim")
    effects = t.set_name("amy", "  Amy   Pond ")
    assert effects == [Send("client-list-notify", {"clientsinroomessage": [
        player("amy", "Amy Pond", "red"),
        player("kim", "Guest", "orange"),
        player("zed", "Guest", "yellow"),
    ]})]


def test_colours_are_unique_while_available_and_freed_on_leave() -> None:
    t = new_game(limit=10)
    clients = [f"c{i}" for i in range(9)]
    for c in clients:
        t.join(c)
    stats = one(t.set_name("c0", "Anna"), "client-list-notify").body["clientsinroomessage"]
    colours = [p["color"] for p in stats]
    assert colours[:7] == list(COLOURS)
    assert set(colours[7:]) <= set(COLOURS)
    t.leave("c2")  # orange is free again
    t.leave("c8")
    t.join("new")
    stats = one(t.set_name("new", "Newt"), "client-list-notify").body["clientsinroomessage"]
    assert {p["slug"]: p["color"] for p in stats}["new"] == "orange"


@pytest.mark.parametrize(("raw", "name"), [
    ("Alice", "Alice"),
    ("  Bo  ", "Bo"),
    ("A", "Guest"),
    ("", "Guest"),
    ("   ", "Guest"),
    ("x" * 21, "Guest"),
    ("x" * 20, "x" * 20),
    ("Mary\n\tJane", "Mary Jane"),
    ("<b>Bob</b>", "bBob/b"),
    ("<>", "Guest"),
    (None, "Guest"),
    (42, "Guest"),
    (["Alice"], "Guest"),
    ({"n": 1}, "Guest"),
    ("\x00\x07", "Guest"),
])
def test_names_are_validated(raw: object, name: str) -> None:
    assert clean_name(raw) == name
    t = new_game()
    t.join("c1")
    body = one(t.handle("c1", "set-client-name", {"setname": raw}), "client-list-notify").body
    assert body["clientsinroomessage"][0]["name"] == name


def test_set_name_by_a_non_player_is_an_error() -> None:
    t = new_game()
    assert error_code(t.set_name("ghost", "Casper"), "ghost") == GameErrorCode.NOT_A_PLAYER


# ---------------------------------------------------------------- the room maker


def test_only_the_maker_starts_a_friend_game() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), start=False)
    assert error_code(t.start("c2"), "c2") == GameErrorCode.NOT_ROOM_MAKER
    assert not t.game.started
    assert error_code(t.start("ghost"), "ghost") == GameErrorCode.NOT_A_PLAYER
    assert sends(t.start("c1"), "room-bot-greetings")
    assert error_code(t.start("c1"), "c1") == GameErrorCode.GAME_STARTED


def test_nobody_starts_or_configures_a_random_room() -> None:
    t = new_game(random_room=True)
    t.join("c1")
    t.join("c2")
    assert error_code(t.start("c1"), "c1") == GameErrorCode.NOT_ROOM_MAKER
    body = {"game_duration": "30", "player_limit": "2"}
    assert error_code(t.settings("c1", body), "c1") == GameErrorCode.NOT_ROOM_MAKER


def test_maker_cannot_start_alone() -> None:
    t = new_game()
    t.join("c1")
    assert error_code(t.start("c1"), "c1") == GameErrorCode.NOT_ENOUGH_PLAYERS


def test_maker_hand_over_before_the_start() -> None:
    t = new_game()
    for c in ("c1", "c2", "c3"):
        t.join(c)
    effects = t.leave("c1")
    assert effects[0] == Kick("c1")
    assert one(effects, "client-list-notify").body["clientsinroomessage"][0]["slug"] == "c2"
    assert one(effects, "is-room-maker") == Send("is-room-maker", {"message": "c2"}, to_room=False,
                                                 clients=("c2",))
    assert t.game.maker == "c2"
    assert error_code(t.start("c3"), "c3") == GameErrorCode.NOT_ROOM_MAKER
    assert sends(t.start("c2"), "room-bot-greetings")


def test_a_non_maker_leaving_keeps_the_maker() -> None:
    t = new_game()
    t.join("c1")
    t.join("c2")
    effects = t.leave("c2")
    assert not sends(effects, "is-room-maker")
    assert t.game.maker == "c1"


def test_settings_applied_with_a_text_the_client_can_read() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), start=False)
    effects = t.handle("c1", "room-settings", {"game_duration": "120", "player_limit": "5"})
    (applied,) = effects
    assert isinstance(applied, Send) and applied.action == "room-setting-applied" and applied.to_room
    text = applied.body["message"]
    # The web client's parseSettingsText reads these two patterns.
    assert re.search(r"(\d+)\s*(?:s\b|secs?\b|seconds?\b)", text)[1] == "120"  # type: ignore[index]
    assert re.search(r"(\d+)\s*(?:players?|clients?|people)\b", text)[1] == "5"  # type: ignore[index]
    assert (t.game.player_limit, t.game.game_duration) == (5, 120)


@pytest.mark.parametrize("body", [
    {"game_duration": "9", "player_limit": "3"},
    {"game_duration": "601", "player_limit": "3"},
    {"game_duration": "60", "player_limit": "1"},
    {"game_duration": "60", "player_limit": "11"},
    {"game_duration": "sixty", "player_limit": "3"},
    {"game_duration": "60.5", "player_limit": "3"},
    {"game_duration": "-60", "player_limit": "3"},
    {"game_duration": True, "player_limit": "3"},
    {"game_duration": None, "player_limit": "3"},
    {"game_duration": ["60"], "player_limit": "3"},
    {"game_duration": "60", "player_limit": "1" * 100},
    {},
    {"other": 1},
])
def test_bad_settings_are_refused_to_the_maker(body: dict[str, Any]) -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), start=False)
    assert error_code(t.settings("c1", body), "c1") == GameErrorCode.BAD_SETTINGS
    assert (t.game.player_limit, t.game.game_duration) == (3, 60)


def test_settings_with_a_non_dict_body_are_refused() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), start=False)
    assert error_code(t.settings("c1", None), "c1") == GameErrorCode.BAD_SETTINGS
    assert error_code(t.handle("c1", "room-settings", ["60"]), "c1") == GameErrorCode.BAD_SETTINGS  # type: ignore[arg-type]


def test_settings_accept_plain_numbers_and_one_field() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), start=False)
    assert sends(t.settings("c1", {"game_duration": 30}), "room-setting-applied")
    assert sends(t.settings("c1", {"player_limit": " 4 "}), "room-setting-applied")
    assert (t.game.player_limit, t.game.game_duration) == (4, 30)


def test_limit_cannot_drop_below_the_players_present() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), ("c3", "Cy"), start=False)
    assert error_code(t.settings("c1", {"player_limit": "2"}), "c1") == GameErrorCode.BAD_SETTINGS


def test_only_the_maker_changes_settings_and_only_before_the_start() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), start=False)
    assert error_code(t.settings("c2", {"player_limit": "5"}), "c2") == GameErrorCode.NOT_ROOM_MAKER
    t.start("c1")
    assert error_code(t.settings("c1", {"player_limit": "5"}), "c1") == GameErrorCode.GAME_STARTED


def test_new_limit_is_enforced() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), start=False)
    t.settings("c1", {"player_limit": "4", "game_duration": "60"})
    t.join("c3")
    t.join("c4")
    assert Kick("c5") in t.join("c5")


# ---------------------------------------------------------------- starting


def test_start_sequence() -> None:
    t = friend_table(("c2", "Bob"), ("c1", "Alice"), start=False)
    effects = t.start("c2")
    assert sends(effects) == [Send("room-bot-greetings", {"message": "welcome"})]
    assert sorted(e.delay for e in effects if isinstance(e, StartTimer)) == [1.0, 60.0]
    assert t.game.phase is Phase.GREETING

    effects = t.fire()  # 1 s: the bot greets
    assert t.now == 1.0
    (greeting,) = sends(effects)
    assert greeting.action == "send-message" and greeting.sender == BOT and set(greeting.body) == {"message"}
    assert [e.delay for e in effects if isinstance(e, StartTimer)] == [1.0]

    effects = t.fire()  # 2 s: the chat phase opens
    assert t.now == 2.0
    chat = one(effects, "message-by-bot")
    assert chat.body["timer"] == 10 and chat.body["letter"] == ""
    assert "whichclientturn" not in chat.body
    assert chat.body["clientstats"] == [player("c1", "Alice", "red"), player("c2", "Bob", "yellow")]
    assert list(chat.body) == ["message", "timer", "clientstats", "letter"]
    assert t.game.phase is Phase.CHAT
    assert error_code(t.attempt("c1", "world"), "c1") == GameErrorCode.NOT_YOUR_TURN

    effects = t.fire()  # 12 s: the first player by slug starts with "w"
    assert t.now == 12.0
    turn = one(effects, "message-by-bot")
    assert list(turn.body) == ["message", "timer", "clientstats", "letter", "whichclientturn"]
    assert turn.body["timer"] == 10 and turn.body["letter"] == "w"
    assert turn.body["whichclientturn"] == player("c1", "Alice", "red")
    assert [e.delay for e in effects if isinstance(e, StartTimer)] == [10.0]
    assert t.game.current_player == "c1"


def test_start_sends_a_fresh_list_when_someone_joined_since_the_last() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), start=False)
    t.join("c3")  # never set a name: the others' list lacks it
    effects = t.start("c1")
    assert [e.action for e in sends(effects)] == ["client-list-notify", "room-bot-greetings"]
    assert [p["slug"] for p in sends(effects)[0].body["clientsinroomessage"]] == ["c1", "c2", "c3"]


def test_random_room_starts_when_both_players_have_names() -> None:
    t = new_game(random_room=True)
    t.join("c1")
    assert not sends(t.set_name("c1", "Alice"), "room-bot-greetings")
    t.join("c2")
    assert not sends(t.set_name("c1", "Alicia"), "room-bot-greetings")  # c2 still unnamed
    effects = t.set_name("c2", "Bob")
    assert [e.action for e in sends(effects)] == ["client-list-notify", "room-bot-greetings"]
    assert t.game.started
    assert not sends(t.set_name("c2", "Bobby"), "room-bot-greetings")  # starts once


def test_random_room_waits_again_after_a_player_leaves_before_the_start() -> None:
    t = new_game(random_room=True)
    t.join("c1")
    t.join("c2")
    t.set_name("c1", "Alice")
    effects = t.leave("c2")
    assert [e.action for e in sends(effects)] == ["client-list-notify"]
    assert t.game.accepting_players
    t.join("c3")
    assert sends(t.set_name("c3", "Cy"), "room-bot-greetings")


# ---------------------------------------------------------------- turns


def test_correct_word_scores_and_passes_its_last_letter() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"))
    to_first_turn(t)
    effects = t.attempt("c1", "World")
    echo, ended = sends(effects)
    assert echo == Send("send-message", {"message": "World", "useravatar": "Al", "color": "yellow"},
                        sender="c1")
    assert ended.action == "send-message" and ended.sender == BOT and "turn ended" in ended.body["message"]
    assert any(isinstance(e, CancelTimer) for e in effects)  # the turn timer
    assert [e.delay for e in effects if isinstance(e, StartTimer)] == [1.0]
    assert t.game.current_player is None  # nobody may attempt during the announcement
    assert error_code(t.attempt("c1", "dog"), "c1") == GameErrorCode.NOT_YOUR_TURN

    start_of_announce = t.now
    nxt = one(t.fire_until("message-by-bot"), "message-by-bot")
    assert t.now == start_of_announce + 1.0
    assert nxt.body["letter"] == "d" and nxt.body["timer"] == 11
    assert nxt.body["whichclientturn"] == player("c2", "Bob", "red")
    assert nxt.body["clientstats"] == [player("c1", "Alice", "yellow", 1), player("c2", "Bob", "red")]
    assert "world" in nxt.body["message"]
    assert t.game.used_words == ["world"]
    assert t.game.scores() == {"c1": 1, "c2": 0}


@pytest.mark.parametrize(("word", "why"), [
    ("dog", "does not start"),
    ("wxyzzy", "not in the dictionary"),
    ("w", "not in the dictionary"),
])
def test_wrong_words_keep_the_letter_and_score_nothing(word: str, why: str) -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"))
    to_first_turn(t)
    effects, nxt = attempt_and_announce(t, "c1", word)
    assert sends(effects, "send-message")[0].body["message"] == word  # still echoed
    assert nxt.body["letter"] == "w"
    assert nxt.body["whichclientturn"]["slug"] == "c2"
    assert why in nxt.body["message"]
    assert t.game.scores() == {"c1": 0, "c2": 0}
    assert t.game.used_words == []


def test_a_word_cannot_be_used_twice_in_a_game() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"))
    to_first_turn(t)
    attempt_and_announce(t, "c1", "wet")     # -> t
    attempt_and_announce(t, "c2", "tree")    # -> e
    attempt_and_announce(t, "c1", "eagle")   # -> e
    _, nxt = attempt_and_announce(t, "c2", "EAGLE")
    assert "already used" in nxt.body["message"]
    assert nxt.body["letter"] == "e"
    assert t.game.scores() == {"c1": 2, "c2": 1}
    assert t.game.used_words == ["wet", "tree", "eagle"]


def test_markup_in_an_attempt_is_not_quoted_into_bot_html() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"))
    to_first_turn(t)
    effects, nxt = attempt_and_announce(t, "c1", "<img src=x>")
    assert sends(effects)[0].body["message"] == "<img src=x>"  # chat is text; the client escapes it
    assert "<img" not in nxt.body["message"]


def test_turn_order_follows_slugs_and_wraps() -> None:
    t = friend_table(("m", "Mia"), ("b", "Ben"), ("x", "Xia"))
    turn = one(to_first_turn(t), "message-by-bot")
    order = [turn.body["whichclientturn"]["slug"]]
    for _ in range(4):
        current = t.game.current_player
        assert current is not None
        _, nxt = attempt_and_announce(t, current, "nonsense")
        order.append(nxt.body["whichclientturn"]["slug"])
    assert order == ["b", "m", "x", "b", "m"]


def test_timer_expiry_passes_the_turn_and_keeps_the_letter() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"))
    to_first_turn(t)
    attempt_and_announce(t, "c1", "wolf")  # letter f, c2's turn
    turn_started = t.now
    effects = t.fire()  # c2's turn timer (11 s)
    assert t.now == turn_started + 11.0
    (ended,) = sends(effects)
    assert ended.sender == BOT and "turn ended" in ended.body["message"]
    nxt = one(t.fire_until("message-by-bot"), "message-by-bot")
    assert nxt.body["letter"] == "f"
    assert nxt.body["whichclientturn"]["slug"] == "c1"
    assert "ran out of time" in nxt.body["message"]
    assert t.game.scores() == {"c1": 1, "c2": 0}


def test_stale_and_unknown_timers_are_ignored() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"))
    effects = to_first_turn(t)
    (turn_timer,) = [e for e in effects if isinstance(e, StartTimer)]
    t.attempt("c1", "world")  # cancels the turn timer
    assert turn_timer.token not in t.timers
    assert t.game.on_timer(turn_timer.token, t.now) == []
    assert t.game.on_timer(10_000, t.now) == []
    assert t.game.on_timer(-1, t.now) == []
    nxt = one(t.fire_until("message-by-bot"), "message-by-bot")
    assert nxt.body["whichclientturn"]["slug"] == "c2"


def test_a_fired_timer_cannot_fire_twice() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"))
    token = min(t.timers, key=lambda k: t.timers[k])
    assert sends(t.fire(token))
    assert t.game.on_timer(token, t.now) == []


def test_off_turn_attempt_is_refused_and_never_scores() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"))
    assert error_code(t.attempt("c2", "world"), "c2") == GameErrorCode.NOT_YOUR_TURN  # greeting phase
    to_first_turn(t)
    assert error_code(t.attempt("c2", "world"), "c2") == GameErrorCode.NOT_YOUR_TURN
    assert error_code(t.attempt("ghost", "world"), "ghost") == GameErrorCode.NOT_A_PLAYER
    assert t.game.scores() == {"c1": 0, "c2": 0}
    assert t.game.current_player == "c1"
    _, nxt = attempt_and_announce(t, "c1", "world")  # the word is still free for the right player
    assert t.game.scores() == {"c1": 1, "c2": 0}


def test_attempt_before_the_start_is_refused() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), start=False)
    assert error_code(t.attempt("c1", "world"), "c1") == GameErrorCode.NOT_YOUR_TURN


@pytest.mark.parametrize("word", [None, 5, ["world"], {"w": 1}, "", "   ", True])
def test_attempt_of_a_non_word_is_an_error_and_keeps_the_turn(word: object) -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"))
    to_first_turn(t)
    assert error_code(t.handle("c1", "attempt-word", {"message": word}), "c1") == GameErrorCode.BAD_MESSAGE
    assert t.game.current_player == "c1"


def test_shown_timer_never_goes_past_the_end_of_the_game() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), duration=20)
    to_first_turn(t)  # at 12 s: 8 s left
    assert t.now == 12.0
    t.attempt("c1", "nonsense")
    nxt = one(t.fire_until("message-by-bot"), "message-by-bot")  # at 13 s
    assert nxt.body["timer"] == 7


def test_durations_are_scaled() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), start=False)
    t.game.timing = Timing(scale=0.01)
    effects = t.start("c1")
    assert sorted(e.delay for e in effects if isinstance(e, StartTimer)) == pytest.approx([0.01, 0.6])
    t.fire_until("message-by-bot")
    effects = t.fire()  # first turn after the (scaled) 10 s chat phase
    assert t.now == pytest.approx(0.12)
    assert [e.delay for e in effects if isinstance(e, StartTimer)] == pytest.approx([0.1])


# ---------------------------------------------------------------- chat


def test_chat_is_relayed_with_avatar_and_colour() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), start=False)
    assert t.chat("c2", "hi all") == [
        Send("send-message", {"message": "hi all", "useravatar": "Bo", "color": "red"}, sender="c2")]


def test_chat_before_a_name_is_set_comes_from_guest() -> None:
    t = new_game()
    t.join("c1")
    (line,) = t.chat("c1", "hello")
    assert isinstance(line, Send) and line.body["useravatar"] == "Gu" and line.sender == "c1"


@pytest.mark.parametrize("text", [None, 3, ["hi"], {}, "", "  "])
def test_chat_of_a_non_string_is_an_error(text: object) -> None:
    t = new_game()
    t.join("c1")
    assert error_code(t.handle("c1", "send-message", {"message": text}), "c1") == GameErrorCode.BAD_MESSAGE


def test_chat_works_during_and_after_the_game() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), duration=10)
    t.fire_until("message-by-bot")  # the chat phase; the game ends before the first turn
    assert sends(t.chat("c2", "my turn next"), "send-message")
    t.fire_until("room-bot-end-game")
    assert sends(t.chat("c2", "gg"), "send-message")


# ---------------------------------------------------------------- the end


def test_game_ends_after_its_duration() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), ("c3", "Cy"), duration=30)
    to_first_turn(t)
    attempt_and_announce(t, "c1", "wolf")      # -> f
    attempt_and_announce(t, "c2", "nonsense")
    attempt_and_announce(t, "c3", "flag")      # -> g
    attempt_and_announce(t, "c1", "dog")       # wrong letter
    attempt_and_announce(t, "c2", "nonsense")
    attempt_and_announce(t, "c3", "golf")      # -> f
    effects = t.fire_until("room-bot-end-game")
    assert t.now == 30.0
    ended, end = sends(effects)
    assert ended.action == "send-message" and ended.body["message"].startswith("Game ended")
    assert ended.sender == BOT
    assert end.action == "room-bot-end-game" and end.to_room
    assert end.body["client_list"] == [player("c3", "Cy", "orange", 2), player("c1", "Alice", "yellow", 1),
                                       player("c2", "Bob", "red", 0)]
    assert end.body["word_list"] == ["wolf", "flag", "golf"]
    assert "Cy" in end.body["message"]
    assert effects[-1] == GameOver()
    assert t.timers == {}, "every other timer is cancelled"
    assert t.game.finished and t.over


def test_end_message_names_a_tie_or_nobody() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), ("c3", "Cy"), duration=20)
    end = one(t.fire_until("room-bot-end-game"), "room-bot-end-game")
    assert "Nobody scored" in end.body["message"] and end.body["word_list"] == []

    t = friend_table(("c1", "Alice"), ("c2", "Bob"), ("c3", "Cy"), duration=20)
    to_first_turn(t)
    attempt_and_announce(t, "c1", "wolf")
    attempt_and_announce(t, "c2", "flag")
    end = one(t.fire_until("room-bot-end-game"), "room-bot-end-game")
    assert "tie" in end.body["message"] and "Alice" in end.body["message"] and "Bob" in end.body["message"]
    assert [p["slug"] for p in end.body["client_list"]] == ["c1", "c2", "c3"]  # ties by slug


def test_game_ends_when_one_player_is_left() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"))
    to_first_turn(t)
    attempt_and_announce(t, "c1", "world")
    assert t.timers  # c2's turn and the game end are pending
    effects = t.leave("c2")
    assert effects[0] == Kick("c2")
    assert [e.action for e in sends(effects)] == ["client-list-notify", "send-message", "room-bot-end-game"]
    assert sends(effects)[1].body["message"].startswith("Game ended")
    assert sends(effects)[0].body["clientsinroomessage"] == [player("c1", "Alice", "yellow", 1)]
    assert sends(effects)[2].body["client_list"] == [player("c1", "Alice", "yellow", 1)]
    assert effects[-1] == GameOver()
    assert t.timers == {}
    assert t.game.finished


@pytest.mark.parametrize("fired", [0, 1, 2, 3])
def test_ending_early_in_any_phase_cancels_every_timer(fired: int) -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"))
    for _ in range(fired):
        t.fire()
    effects = t.leave("c1")
    assert sends(effects, "room-bot-end-game")
    assert t.timers == {}
    assert all(t.game.on_timer(token, t.now) == [] for token in range(1, 20))


def test_a_finished_game_refuses_joins_and_starts() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"))
    t.leave("c2")
    effects = t.join("c3")
    assert "over" in one(effects, "fail-join-room-notify").body["message"]
    assert Kick("c3") in effects
    assert error_code(t.start("c1"), "c1") == GameErrorCode.GAME_STARTED
    assert t.leave("c1") == [Kick("c1")]  # no second GameOver


def test_an_emptied_room_is_over() -> None:
    t = new_game()
    t.join("c1")
    assert t.leave("c1") == [Kick("c1"), GameOver()]
    assert t.game.finished and not t.game.started
    assert t.leave("c1") == []


def test_leave_room_action_works() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), ("c3", "Cy"), start=False)
    effects = t.handle("c3", "leave-room", {"message": "room1"})
    assert effects[0] == Kick("c3")
    assert t.game.players == ["c1", "c2"]
    assert t.handle("c2", "leave-room", None)[0] == Kick("c2")  # type: ignore[arg-type]


def test_current_player_leaving_mid_game_passes_the_turn() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), ("c3", "Cy"))
    to_first_turn(t)
    attempt_and_announce(t, "c1", "wolf")  # c2's turn, letter f
    effects = t.leave("c2")
    assert effects[0] == Kick("c2")
    listed, ended = sends(effects)
    assert [p["slug"] for p in listed.body["clientsinroomessage"]] == ["c1", "c3"]
    assert "turn ended" in ended.body["message"]
    nxt = one(t.fire_until("message-by-bot"), "message-by-bot")
    assert nxt.body["whichclientturn"]["slug"] == "c3"
    assert nxt.body["letter"] == "f"
    assert [p["slug"] for p in nxt.body["clientstats"]] == ["c1", "c3"]
    assert "left" in nxt.body["message"]


def test_player_leaving_mid_game_is_dropped_from_the_turn_order() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), ("c3", "Cy"), ("c4", "Dee"), limit=4)
    to_first_turn(t)
    effects = t.leave("c2")  # not c2's turn: only the list changes
    assert [e.action for e in sends(effects)] == ["client-list-notify"]
    assert t.game.current_player == "c1"
    order = []
    for _ in range(4):
        current = t.game.current_player
        assert current is not None
        _, nxt = attempt_and_announce(t, current, "nonsense")
        order.append(nxt.body["whichclientturn"]["slug"])
    assert order == ["c3", "c4", "c1", "c3"]


def test_leaving_during_the_announcement_skips_the_leaver() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), ("c3", "Cy"))
    to_first_turn(t)
    t.attempt("c1", "wolf")  # announcing c2 in 1 s
    t.leave("c2")
    nxt = one(t.fire_until("message-by-bot"), "message-by-bot")
    assert nxt.body["whichclientturn"]["slug"] == "c3"


def test_leaving_twice_or_as_a_stranger_is_harmless() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), ("c3", "Cy"))
    assert t.leave("ghost") == []
    t.leave("c3")
    assert t.leave("c3") == []


def test_maker_leaving_mid_game_does_not_end_a_three_player_game() -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), ("c3", "Cy"))
    effects = t.leave("c1")
    assert not sends(effects, "is-room-maker") and not sends(effects, "room-bot-end-game")
    assert t.game.maker == "c2"


# ---------------------------------------------------------------- bad input


def test_unknown_action_is_an_error_to_the_sender_only() -> None:
    t = new_game()
    t.join("c1")
    effects = t.handle("c1", "dance", {})
    assert error_code(effects, "c1") == GameErrorCode.UNKNOWN_ACTION
    assert "dance" in sends(effects)[0].body["message"]


@pytest.mark.parametrize("body", [None, [], "text", 5, {"setname": {"x": 1}}, {"message": None}])
@pytest.mark.parametrize("action", ["set-client-name", "room-settings", "start-the-game", "send-message",
                                    "attempt-word", "leave-room", "", "join-room"])
def test_bad_bodies_never_raise(action: str, body: Any) -> None:
    t = friend_table(("c1", "Alice"), ("c2", "Bob"), start=action != "attempt-word")
    if action == "attempt-word":
        t.start("c1")
        to_first_turn(t)
    effects = t.handle("c1", action, body)
    assert isinstance(effects, list)


def test_game_rejects_nonsense_construction() -> None:
    with pytest.raises(ValueError):
        Game("r", random_room=False, words=WORDS, timing=Timing(), player_limit=1)
    with pytest.raises(ValueError):
        Game("r", random_room=False, words=WORDS, timing=Timing(), game_duration=0)


# ---------------------------------------------------------------- invariants

CLIENTS = ["c1", "c2", "c3", "c4"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 700) | st.text(max_size=8)
    | st.sampled_from(["2", "3", "10", "60", "600", "world", "wolf", "Guest"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={"setname": json_values, "message": json_values,
                                        "game_duration": json_values, "player_limit": json_values}),
)
client_actions = st.sampled_from(["set-client-name", "room-settings", "start-the-game", "send-message",
                                  "attempt-word", "leave-room", "bogus"])
any_word = st.sampled_from(sorted(WORDS) + ["WOLF", "zzz", " Dog "])
other_steps = st.one_of(
    st.tuples(st.just("join"), st.sampled_from(CLIENTS)),
    st.tuples(st.just("leave"), st.sampled_from(CLIENTS)),
    st.tuples(st.just("rejoin"), st.sampled_from(CLIENTS)),  # back after its connection dropped
    st.tuples(st.just("handle"), st.sampled_from(CLIENTS), client_actions, bodies),
    st.tuples(st.just("word"), st.sampled_from(CLIENTS), any_word),
    st.tuples(st.just("start"), st.sampled_from(CLIENTS)),
    st.tuples(st.just("fire"), st.integers(0, 3)),
    st.tuples(st.just("stale"), st.integers(-2, 40)),
)
# Rounds of one arbitrary step (or none) then a few "play" steps: the current player (if any)
# attempts a word, else the timer due first fires. Plays keep games moving into turns and scores.
# A play names its player: None for whoever's turn it is, else a client that may well be off turn.
plays = st.tuples(st.just("play"), any_word, st.sampled_from([None, None, None, *CLIENTS]))
rounds = st.lists(st.tuples(st.none() | other_steps, st.lists(plays, min_size=1, max_size=6)), max_size=15)


def flatten(script: list[tuple[tuple[Any, ...] | None, list[tuple[Any, ...]]]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for step, more in script:
        out += ([step] if step else []) + more
    return out


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_room=st.booleans(), limit=st.integers(2, 4), setup=st.integers(0, 2),
       script=rounds.map(flatten))
def test_any_sequence_keeps_the_invariants(random_room: bool, limit: int, setup: int,
                                           script: list[tuple[Any, ...]]) -> None:
    t = new_game(random_room=random_room, limit=limit, duration=40)
    game = t.game
    last_list: dict[str, list[str]] = {}  # what each client's page holds
    if setup:
        # Two named players, and with setup 2 a third who joins unnamed just before the start.
        script = [("join", "c1"), ("join", "c2"), ("handle", "c1", "set-client-name", {"setname": "Ann"}),
                  ("handle", "c2", "set-client-name", {"setname": "Ben"}),
                  *([("join", "c3")] if setup == 2 else []), ("start", "c1"), *script]
    for step in script:
        before = game.scores()
        turn, letter, used = game.current_player, game.letter, set(game.used_words)
        if step[0] == "play":
            if step[2] is not None:
                step = ("word", step[2], step[1])
            elif turn is not None:
                step = ("word", turn, step[1])
            elif t.timers:
                step = ("due",)
            else:
                continue
        kind = step[0]
        if kind == "due":
            effects = t.fire()  # the timer due first, as a host would
        elif kind == "join":
            effects = t.join(step[1])
        elif kind == "leave":
            effects = t.leave(step[1])
        elif kind == "rejoin":
            phase, timers = game.phase, dict(t.timers)
            effects = t.rejoin(step[1])
            assert all(isinstance(e, Send) and not e.to_room and e.clients == (step[1],)
                       for e in effects), "a rejoin tells the returning player only"
            assert (game.phase, t.timers, game.scores()) == (phase, timers, before), "and changes nothing"
            assert bool(effects) == (step[1] in game.players)
        elif kind == "handle":
            effects = t.handle(step[1], step[2], step[3])
        elif kind == "word":
            effects = t.attempt(step[1], step[2])
        elif kind == "start":
            effects = t.start(step[1])
        elif kind == "fire":
            if not t.timers:
                continue
            effects = t.fire(sorted(t.timers)[step[1] % len(t.timers)])
        else:
            assert step[1] in t.timers or game.on_timer(step[1], t.now) == []
            continue

        # Deliver room messages to the players present after the step, as the host would.
        room = game.players
        for e in sends(effects):
            for c in (room if e.to_room else list(e.clients)):
                if e.action == "client-list-notify":
                    last_list[c] = [p["slug"] for p in e.body["clientsinroomessage"]]
                elif e.action == "message-by-bot":
                    assert [p["slug"] for p in e.body["clientstats"]] == last_list.get(c), \
                        "clientstats walk the client's last list by index"
                    assert e.body["clientstats"] == sorted(e.body["clientstats"], key=lambda p: p["slug"])
                    turn_of = e.body.get("whichclientturn")
                    assert turn_of is None or turn_of["slug"] in room

        # Only the current player's valid, fresh words score, by exactly one.
        after = game.scores()
        changed = {c for c in after if after[c] != before.get(c, 0)}
        if changed:
            word = step[3].get("message") if kind == "handle" else step[2]
            assert changed == {step[1]} and after[step[1]] == before[step[1]] + 1
            assert kind == "word" or (kind == "handle" and step[2] == "attempt-word")
            assert turn == step[1] and judge(word, letter, WORDS, used) is Verdict.CORRECT

        assert len(room) <= game.player_limit
        assert not set(t.kicked) & set(room), "a kicked client is no player"
        t.kicked = []
        colours = [p["color"] for p in game.roster()]
        assert [p["slug"] for p in game.roster()] == room
        if len(room) <= len(COLOURS):
            assert len(colours) == len(set(colours)), "colours are unique while available"
        if game.finished:
            assert t.timers == {}, "a finished game leaves no timer behind"
            assert t.over
        if game.phase is not Phase.TURN:
            assert game.current_player is None
