#!/usr/bin/env node
// Runs scenario.js under Node with one client library and transport.
//
//   node run.js '{"client":"stompjs2-sockjs","transport":"xhr-polling",
//                 "url":"http://127.0.0.1:8080/ws","user":"u1","room":"r1",
//                 "text":"hello","marker":"back"}'
//
// Prints JSON lines on stdout: {"phase":"disconnected",...} once the first
// session is closed, then waits for a line on stdin (the other client has
// sent its messages: press Enter by hand) and prints
// {"phase":"done",...}. Exits 0 when the scenario ran to the end, 1 when a
// step failed (the report says which), 2 on bad usage or timeout.
'use strict';

// @stomp/stompjs finds the WebSocket implementation as a browser's global;
// under Node that is the ws package.
globalThis.WebSocket = require('ws');
const SockJS = require('sockjs-client');
const Stomp = require('stompjs');
const StompJs = require('@stomp/stompjs');
const readline = require('node:readline');
const { run } = require('./scenario.js');

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

let params;
try {
  params = JSON.parse(process.argv[2] || '');
} catch (e) {
  process.stderr.write('usage: node run.js \'{"client":...,"transport":...,"url":...,"user":...,"room":...,"text":...,"marker":...}\': ' + e.message + '\n');
  process.exit(2);
}

const lines = readline.createInterface({ input: process.stdin });
const stdinLines = lines[Symbol.asyncIterator]();

const timeoutMs = params.timeoutMs || 30000;
setTimeout(() => {
  emit({ phase: 'done', client: params.client, transport: params.transport, error: 'run.js: no result within ' + timeoutMs + 'ms' });
  process.exit(2);
}, timeoutMs).unref();

run({ SockJS, Stomp, StompJs }, params, {
  between: async (report) => {
    emit(Object.assign({ phase: 'disconnected' }, report));
    const next = await stdinLines.next();
    if (next.done) {
      throw new Error('stdin closed before the go-ahead');
    }
  },
}).then((report) => {
  emit(Object.assign({ phase: 'done' }, report));
  // sockjs-client and stompjs may leave timers behind: stop here.
  process.exit(report.error ? 1 : 0);
});
