"""The peers `make bench` measures meshstream against: `raw_ws` (rooms.py, one Python process
on `websockets`) and `nodesio` (sio_rooms.js, Node socket.io)."""
