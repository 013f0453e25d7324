"""Words Battle, the game meshstream came from: pure game and lobby logic.

`game.Game` is one game room, `lobby.Lobby` decides where lobby requests go and
`dictionary` loads the word list. None of them touches a socket, a clock or a
thread: the watcher processes feed them inputs and carry out the effects they
return.
"""
