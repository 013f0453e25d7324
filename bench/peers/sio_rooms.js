#!/usr/bin/env node
// The `nodesio` peer: rooms on Node socket.io (websocket transport only), one process.
//   'join' (room, ack)          -> socket.join(room); ack(true)
//   'send-message' ({room, ..}) -> io.to(room).emit('send-message', msg)   (the sender too)
// Its packages are bench/node's (`npm ci` there).
//   node bench/peers/sio_rooms.js --port P [--host 127.0.0.1]
'use strict';
const http = require('http');
const path = require('path');
const { createRequire } = require('module');
const { Server } = createRequire(path.join(__dirname, '..', 'node', 'package.json'))('socket.io');

const argv = process.argv.slice(2);
const flag = (name, dflt) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : dflt; };
const host = flag('--host', '127.0.0.1');
const port = Number(flag('--port'));
if (!port) { console.error('usage: sio_rooms.js --port P [--host H]'); process.exit(2); }

const server = http.createServer();
const io = new Server(server, { transports: ['websocket'], perMessageDeflate: false, serveClient: false, maxHttpBufferSize: 1e6 });
io.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    if (typeof room !== 'string') return;
    socket.join(room);
    if (typeof ack === 'function') ack(true);
  });
  socket.on('send-message', (msg) => {
    if (msg && typeof msg.room === 'string') io.to(msg.room).emit('send-message', msg);
  });
});
server.listen({ host, port, backlog: 2048 }, () => console.error(`nodesio listening on ${host}:${port}`));
const stop = () => { io.close(); server.close(); setTimeout(() => process.exit(0), 300).unref(); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
