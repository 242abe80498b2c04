// The scenario chatd's client tests (e2e/clients_test.go) run with the
// STOMP client libraries Spring apps use, unchanged, under Node (run.js)
// and in a browser (page.html): connect, subscribe to a room, send a
// message and receive it, disconnect; then, once another client has sent
// more messages, reconnect and resubscribe with since-id, and collect
// what arrives. It reports what happened; the Go test judges it.
//
// Clients (params.client):
//   stompjs2-sockjs  stompjs 2.3.3's Stomp.over(new SockJS(url, null, {transports: [t]}))
//   stompjs7-sockjs  @stomp/stompjs 7's Client with webSocketFactory: () => new SockJS(...)
//   stompjs7-ws      @stomp/stompjs 7's Client with brokerURL ws://.../ws (raw WebSocket)
//
// libs holds the libraries: {SockJS, Stomp (stompjs 2.3.3), StompJs
// (@stomp/stompjs 7)}, from require() under Node, the bundles' globals in
// a browser.
(function (root, factory) {
  if (typeof module === 'object' && module.exports) {
    module.exports = factory();
  } else {
    root.chatdClients = factory();
  }
}(typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  var CLIENTS = ['stompjs2-sockjs', 'stompjs7-sockjs', 'stompjs7-ws'];

  function wsURL(url) { return url.replace(/^http/, 'ws'); }

  function describe(err) {
    if (err == null) return String(err);
    if (typeof err === 'string') return err;
    if (err.command) { // a STOMP frame, ERROR
      return err.command + ' ' + (err.headers && err.headers.message) + (err.body ? ': ' + err.body : '');
    }
    if (err.message) return err.message;
    return JSON.stringify(err);
  }

  // Inbox keeps the MESSAGE frames of one subscription and lets the
  // scenario wait, with a deadline, for a condition on them.
  function Inbox() {
    this.frames = [];
    this.waiters = [];
  }
  Inbox.prototype.push = function (headers, body) {
    this.frames.push({ headers: Object.assign({}, headers), body: body });
    this.waiters.slice().forEach(function (w) { w(); });
  };
  Inbox.prototype.waitFor = function (cond, ms, what) {
    var self = this;
    return new Promise(function (resolve, reject) {
      var timer;
      function check() {
        var ok;
        try {
          ok = cond(self.frames);
        } catch (e) {
          ok = false;
        }
        if (ok) {
          clearTimeout(timer);
          self.waiters = self.waiters.filter(function (w) { return w !== check; });
          resolve(self.frames);
        }
      }
      timer = setTimeout(function () {
        self.waiters = self.waiters.filter(function (w) { return w !== check; });
        reject(new Error('no ' + what + ' within ' + ms + 'ms; received ' + JSON.stringify(self.frames)));
      }, ms);
      self.waiters.push(check);
      check();
    });
  };

  function textOf(frame) {
    try {
      return JSON.parse(frame.body).message;
    } catch (e) {
      return undefined;
    }
  }

  // open connects one client as o.user and resolves to a session:
  // {info, errors, subscribe(dest, headers, inbox), send(dest, body), close()}.
  function open(libs, o) {
    switch (o.client) {
      case 'stompjs2-sockjs':
        return openStompjs2(libs, o);
      case 'stompjs7-sockjs':
        return openStompjs7(libs, o, false);
      case 'stompjs7-ws':
        return openStompjs7(libs, o, true);
    }
    return Promise.reject(new Error('unknown client ' + JSON.stringify(o.client) + '; want one of ' + CLIENTS.join(', ')));
  }

  function openStompjs2(libs, o) {
    return new Promise(function (resolve, reject) {
      var errors = [];
      var connected = false;
      var sock = new libs.SockJS(o.url, null, { transports: [o.transport] });
      var client = libs.Stomp.over(sock);
      client.debug = null; // as Spring apps do, to keep the console quiet
      var timer = setTimeout(function () {
        fail(new Error('no CONNECTED within ' + o.connectTimeoutMs + 'ms'));
      }, o.connectTimeoutMs);
      function fail(err) {
        clearTimeout(timer);
        try { sock.close(); } catch (e) { /* already closed */ }
        reject(err);
      }
      client.connect({ login: o.user }, function (frame) {
        connected = true;
        clearTimeout(timer);
        var closed = new Promise(function (res) { sock.addEventListener('close', function () { res(); }); });
        resolve({
          info: {
            version: frame.headers.version,
            userName: frame.headers['user-name'],
            server: frame.headers.server,
            heartBeat: frame.headers['heart-beat'],
            transport: sock.transport,
          },
          errors: errors,
          subscribe: function (dest, headers, inbox) {
            client.subscribe(dest, function (m) { inbox.push(m.headers, m.body); }, Object.assign({}, headers));
          },
          send: function (dest, body) { client.send(dest, {}, body); },
          close: function () {
            client.disconnect();
            return closed;
          },
        });
      }, function (err) {
        if (!connected) {
          fail(new Error(describe(err)));
        } else {
          errors.push(describe(err));
        }
      });
    });
  }

  function openStompjs7(libs, o, raw) {
    return new Promise(function (resolve, reject) {
      var errors = [];
      var connected = false;
      var sock = null;
      var timer;
      var conf = {
        connectHeaders: { login: o.user },
        reconnectDelay: 0, // the scenario reconnects itself
        debug: function () {},
        onConnect: function (frame) {
          connected = true;
          clearTimeout(timer);
          resolve({
            info: {
              version: frame.headers.version,
              userName: frame.headers['user-name'],
              server: frame.headers.server,
              heartBeat: frame.headers['heart-beat'],
              transport: raw ? 'raw' : sock && sock.transport,
            },
            errors: errors,
            subscribe: function (dest, headers, inbox) {
              client.subscribe(dest, function (m) { inbox.push(m.headers, m.body); }, Object.assign({}, headers));
            },
            send: function (dest, body) { client.publish({ destination: dest, body: body }); },
            close: function () { return client.deactivate(); },
          });
        },
        onStompError: function (frame) {
          if (!connected) {
            fail(new Error(describe(frame)));
          } else {
            errors.push(describe(frame));
          }
        },
        onWebSocketClose: function (evt) {
          if (!connected) {
            fail(new Error('connection closed before CONNECTED: code ' + evt.code + (evt.reason ? ', ' + evt.reason : '')));
          }
        },
      };
      if (raw) {
        conf.brokerURL = wsURL(o.url);
      } else {
        conf.webSocketFactory = function () {
          sock = new libs.SockJS(o.url, null, { transports: [o.transport] });
          return sock;
        };
      }
      var client = new libs.StompJs.Client(conf);
      timer = setTimeout(function () {
        fail(new Error('no CONNECTED within ' + o.connectTimeoutMs + 'ms'));
      }, o.connectTimeoutMs);
      function fail(err) {
        clearTimeout(timer);
        client.deactivate({ force: true });
        reject(err);
      }
      client.activate();
    });
  }

  function withDefaults(p) {
    return Object.assign({ connectTimeoutMs: 10000, waitMs: 10000, quietMs: 250 }, p);
  }

  // run plays the scenario. hooks.between(report) is called once the first
  // session is closed, and must resolve once the other client has sent
  // its messages. run never rejects: a failed step is reported as error.
  async function run(libs, params, hooks) {
    var p = withDefaults(params);
    var dest = '/topic/chat.' + p.room;
    var app = '/app/chat.' + p.room;
    var report = { client: p.client, transport: p.transport, user: p.user, room: p.room };
    var step = 'connect';
    try {
      var s = await open(libs, p);
      report.first = { connected: s.info, errors: s.errors };
      step = 'subscribe, send and receive the first message';
      var inbox = new Inbox();
      s.subscribe(dest, {}, inbox);
      s.send(app, JSON.stringify({ message: p.text, type: 'TALK', n: 7 }));
      await inbox.waitFor(function (fs) { return fs.length >= 1; }, p.waitMs, 'first message');
      report.first.messages = inbox.frames;
      step = 'disconnect';
      await s.close();
      report.first.messages = inbox.frames.slice();
      var first = JSON.parse(inbox.frames[0].body);
      report.firstId = first.id;

      step = 'wait for the other client';
      await hooks.between(report);

      step = 'reconnect';
      s = await open(libs, p);
      report.second = { connected: s.info, errors: s.errors };
      step = 'resubscribe with since-id and receive the replay';
      var replay = new Inbox();
      s.subscribe(dest, { 'since-id': String(report.firstId) }, replay);
      // A message of its own after the SUBSCRIBE: it is stored once the
      // subscription is in place, so it must come once, after the replay.
      s.send(app, JSON.stringify({ message: p.marker, type: 'TALK', n: 8 }));
      report.second.messages = replay.frames;
      await replay.waitFor(function (fs) {
        return fs.some(function (f) { return textOf(f) === p.marker; });
      }, p.waitMs, 'own message after the replay');
      // Anything more would be a duplicate: look for a moment.
      await new Promise(function (res) { setTimeout(res, p.quietMs); });
      report.second.messages = replay.frames.slice();
      step = 'disconnect again';
      await s.close();
    } catch (e) {
      report.error = step + ': ' + describe(e);
    }
    return report;
  }

  // tryConnect only connects (and disconnects): for pages whose origin
  // chatd must refuse. It resolves to {connected, info} or {connected:
  // false, error}.
  async function tryConnect(libs, params) {
    var p = withDefaults(params);
    try {
      var s = await open(libs, p);
      await s.close();
      return { connected: true, info: s.info };
    } catch (e) {
      return { connected: false, error: describe(e) };
    }
  }

  return { CLIENTS: CLIENTS, run: run, tryConnect: tryConnect };
}));
