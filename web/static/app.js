// chatd's chat page: plain JavaScript over @stomp/stompjs (docs/protocol.md).
//
// Every room keeps its messages by id, so whatever arrives twice (history
// page, replay, live) shows once. After a reconnect each room resubscribes
// with since-id set to the newest id seen, and chatd replays what was
// missed. Messages typed while offline wait in an outbox and are sent with
// a client-msg-id, so a resend after a lost RECEIPT is stored once.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const ROOM_ID = /^[A-Za-z0-9_-]{1,64}$/;
  const PAGE = 50;
  const store = window.sessionStorage; // per tab: two tabs may be two users

  const state = {
    user: null,
    client: null,
    connected: false,
    rooms: new Map(), // room id -> room
    current: null, // room id on screen
    // History requests go one at a time: a reply does not say which
    // request it answers, and an empty page names no room.
    logQueue: [], // {room, before} still to send
    logInFlight: null, // room id of the request awaiting its reply
    outbox: new Map(), // client-msg-id -> {room, text}
  };

  function newRoom(id) {
    return {
      id,
      msgs: new Map(), // message id -> message
      last: 0, // newest id seen
      oldest: 0, // oldest id loaded
      historyLoaded: false,
      noOlder: false,
      reads: new Map(), // user -> newest id they read
      myRead: 0, // my read position as far as this page knows
      readSent: 0,
      refresh: null, // timer: re-read unread counts after read receipts
      note: '',
    };
  }

  function randomID() {
    const b = new Uint8Array(12);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  function save() {
    store.setItem('chatd.user', state.user || '');
    store.setItem('chatd.rooms', JSON.stringify([...state.rooms.keys()]));
    store.setItem('chatd.current', state.current || '');
  }

  // Connection

  function setStatus(s) {
    const el = $('status');
    el.dataset.state = s;
    el.textContent = s;
  }

  function connect(user) {
    state.user = user;
    save();
    $('me').textContent = user;
    $('login').hidden = true;
    $('chat').hidden = false;
    $('logout').hidden = false;
    setStatus('connecting');
    let sessionUp = false; // did this attempt get CONNECTED?
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const client = new StompJs.Client({
      brokerURL: `${proto}//${location.host}/ws`,
      connectHeaders: { login: user, host: location.hostname },
      reconnectDelay: 1000,
      connectionTimeout: 5000,
      heartbeatIncoming: 10000,
      heartbeatOutgoing: 10000,
      beforeConnect: () => { sessionUp = false; },
      onConnect: () => { sessionUp = true; onConnect(); },
      onStompError: (f) => {
        if (!sessionUp) {
          // Refused at CONNECT (a bad name): retrying would not help.
          logout(f.headers.message || 'connection refused');
          return;
        }
        showNotice(f.headers.message || 'server error');
      },
      onWebSocketClose: () => {
        state.connected = false;
        if (state.client === client) setStatus('reconnecting');
        updateSendForm();
      },
    });
    state.client = client;
    client.activate();
  }

  function onConnect() {
    state.connected = true;
    state.logQueue = [];
    state.logInFlight = null;
    setStatus('connected');
    showNotice('');
    state.client.subscribe('/user/queue/chat.log', onLog);
    for (const room of state.rooms.values()) subscribeRoom(room);
    for (const [cid, m] of state.outbox) publish(cid, m);
    updateSendForm();
  }

  function logout(error) {
    const client = state.client;
    state.client = null;
    state.connected = false;
    if (client) client.deactivate();
    for (const room of state.rooms.values()) clearTimeout(room.refresh);
    state.rooms.clear();
    state.current = null;
    state.outbox.clear();
    state.user = null;
    store.clear();
    setStatus('offline');
    $('me').textContent = '';
    $('chat').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-error').hidden = !error;
    $('login-error').textContent = error || '';
    $('messages').replaceChildren();
    $('rooms').replaceChildren();
    $('title').textContent = 'Join a room';
    showNotice('');
    updateSendForm();
  }

  // Rooms

  function subscribeRoom(room) {
    const c = state.client;
    const headers = {};
    // Once history is in (or anything was seen), resume after the newest
    // id: chatd replays what this page missed, then goes on live.
    if (room.historyLoaded || room.last > 0) headers['since-id'] = String(room.last);
    c.subscribe(`/topic/chat.${room.id}`, (f) => onRoomMessage(room, f), headers);
    c.subscribe(`/topic/chat.${room.id}.read`, (f) => onReadEvent(room, f));
    // Subscribed first, so nothing falls between the history page and live.
    if (!room.historyLoaded) requestLog(room, 0);
  }

  function join(id) {
    if (!state.rooms.has(id)) {
      const room = newRoom(id);
      state.rooms.set(id, room);
      try {
        if (state.connected) subscribeRoom(room);
      } catch (e) {
        // The connection has just gone: onConnect subscribes every room.
      }
    }
    select(id);
  }

  function select(id) {
    state.current = id;
    save();
    const room = state.rooms.get(id);
    $('title').textContent = `# ${id}`;
    showNotice(room.note);
    renderRooms();
    renderMessages(true);
    updateSendForm();
    markRead(room);
  }

  // publishFrame sends unless the connection has just gone (stompjs
  // throws then); onConnect sends what still matters again.
  function publishFrame(params) {
    try {
      state.client.publish(params);
      return true;
    } catch (e) {
      return false;
    }
  }

  function requestLog(room, before) {
    state.logQueue.push({ room: room.id, before });
    nextLog();
  }

  function nextLog() {
    while (state.logInFlight === null && state.logQueue.length > 0) {
      const { room, before } = state.logQueue.shift();
      const body = { limit: PAGE };
      if (before) body.before = before;
      const sent = publishFrame({
        destination: `/app/chat.${room}.log`,
        body: JSON.stringify(body),
        headers: { 'content-type': 'application/json' },
      });
      if (sent) state.logInFlight = room;
    }
  }

  // onLog takes a history page: the reply to this page's request, or to
  // one from another tab of the same user (all of a user's sessions get
  // the replies), which merges just as well.
  function onLog(frame) {
    const msgs = JSON.parse(frame.body);
    const id = msgs.length > 0 ? msgs[0].roomId : state.logInFlight;
    if (id !== null && id === state.logInFlight) {
      state.logInFlight = null;
      nextLog();
    }
    const room = state.rooms.get(id);
    if (!room) return;
    const first = !room.historyLoaded;
    if (msgs.length < PAGE) room.noOlder = true;
    for (const m of msgs) merge(room, m, true);
    if (first) {
      room.historyLoaded = true;
      // What was there before this page opened counts as read.
      room.myRead = Math.max(room.myRead, room.last);
    }
    changed(room);
  }

  function onRoomMessage(room, frame) {
    if (frame.headers.history === 'reset') {
      // The store was rebuilt: what this page held names nothing now.
      room.msgs.clear();
      room.last = room.oldest = room.myRead = room.readSent = 0;
      room.note = 'History was reset on the server.';
    } else if (frame.headers.history === 'gap') {
      room.note = 'Some messages are no longer kept on the server.';
    }
    merge(room, JSON.parse(frame.body), false);
    changed(room);
  }

  function merge(room, m, fromLog) {
    const had = room.msgs.get(m.id);
    // A history page carries current unread counts; a live copy of a
    // message already held brings nothing new.
    if (had && !fromLog) return;
    room.msgs.set(m.id, m);
    room.last = Math.max(room.last, m.id);
    room.oldest = room.oldest ? Math.min(room.oldest, m.id) : m.id;
  }

  function onReadEvent(room, frame) {
    const ev = JSON.parse(frame.body);
    if (ev.userId === state.user) {
      room.myRead = Math.max(room.myRead, ev.lastReadId);
      room.readSent = Math.max(room.readSent, ev.lastReadId);
    } else {
      room.reads.set(ev.userId, Math.max(room.reads.get(ev.userId) || 0, ev.lastReadId));
    }
    // Unread counts are chatd's to tell: read the loaded messages' current
    // counts again, once for a burst of receipts.
    clearTimeout(room.refresh);
    room.refresh = setTimeout(() => {
      if (state.connected && room.msgs.size > 0) requestLog(room, 0);
    }, 200);
    changed(room);
  }

  function markRead(room) {
    if (!state.connected || room.last <= room.readSent) return;
    const sent = publishFrame({
      destination: `/app/chat.${room.id}.read`,
      body: JSON.stringify({ lastReadId: room.last }),
      headers: { 'content-type': 'application/json' },
    });
    if (sent) {
      room.readSent = room.last;
      room.myRead = Math.max(room.myRead, room.last);
    }
  }

  function changed(room) {
    if (room.id === state.current) {
      showNotice(room.note);
      renderMessages(false);
      markRead(room);
    }
    renderRooms();
  }

  // Sending

  function send(text) {
    const cid = randomID();
    const m = { room: state.current, text };
    state.outbox.set(cid, m);
    if (state.connected) publish(cid, m);
    updateSendForm();
  }

  function publish(cid, m) {
    // The RECEIPT means stored; until then the message stays in the outbox
    // and goes again after a reconnect (the client-msg-id makes that safe).
    try {
      state.client.watchForReceipt(cid, () => {
        state.outbox.delete(cid);
        updateSendForm();
      });
    } catch (e) {
      return; // not connected: onConnect sends it
    }
    publishFrame({
      destination: `/app/chat.${m.room}`,
      body: JSON.stringify({ message: m.text }),
      headers: { 'content-type': 'application/json', 'client-msg-id': cid, receipt: cid },
    });
  }

  // Rendering

  function unreadForMe(room) {
    let n = 0;
    for (const m of room.msgs.values()) if (m.id > room.myRead && m.userId !== state.user) n++;
    return n;
  }

  function renderRooms() {
    const items = [...state.rooms.values()].map((room) => {
      const li = document.createElement('li');
      li.dataset.room = room.id;
      if (room.id === state.current) li.className = 'current';
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = room.id;
      const n = room.id === state.current ? 0 : unreadForMe(room);
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = String(n);
      badge.hidden = n === 0;
      b.append(' ', badge);
      b.addEventListener('click', () => select(room.id));
      li.append(b);
      return li;
    });
    $('rooms').replaceChildren(...items);
  }

  function renderMessages(jump) {
    const list = $('messages');
    const room = state.rooms.get(state.current);
    if (!room) {
      list.replaceChildren();
      return;
    }
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    const ids = [...room.msgs.keys()].sort((a, b) => a - b);
    // Who has read up to where: shown under the newest message they read.
    const readers = new Map();
    for (const [user, pos] of room.reads) {
      let at = 0;
      for (const id of ids) if (id <= pos) at = id;
      if (at) readers.set(at, [...(readers.get(at) || []), user]);
    }
    const items = ids.map((id) => {
      const m = room.msgs.get(id);
      const li = document.createElement('li');
      li.dataset.id = String(id);
      li.className = m.userId === state.user ? 'msg mine' : 'msg';
      const who = document.createElement('span');
      who.className = 'who';
      who.textContent = m.userId;
      const text = document.createElement('span');
      text.className = 'text';
      text.textContent = m.message;
      const time = document.createElement('time');
      time.dateTime = m.createdAt;
      time.textContent = new Date(m.createdAt).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      li.append(who, text, time);
      if (m.unreadCount > 0) {
        const u = document.createElement('span');
        u.className = 'unread';
        u.title = 'members who have not read this yet';
        u.textContent = String(m.unreadCount);
        li.append(u);
      }
      if (readers.has(id)) {
        const r = document.createElement('span');
        r.className = 'readers';
        r.textContent = `seen by ${readers.get(id).sort().join(', ')}`;
        li.append(r);
      }
      return li;
    });
    list.replaceChildren(...items);
    if (jump || atBottom) list.scrollTop = list.scrollHeight;
    $('older').hidden = room.noOlder || room.msgs.size === 0;
  }

  function showNotice(text) {
    $('notice').textContent = text;
    $('notice').hidden = !text;
  }

  function updateSendForm() {
    const ok = state.current !== null;
    $('text').disabled = !ok;
    document.querySelector('#send button').disabled = !ok;
    const n = state.outbox.size;
    $('unsent').hidden = n === 0;
    $('unsent').textContent = `${n} unsent`;
  }

  // Wiring

  $('login').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('name').value.trim();
    if (name) connect(name);
  });
  $('logout').addEventListener('click', () => logout(''));
  $('join').addEventListener('submit', (e) => {
    e.preventDefault();
    const id = $('room').value.trim();
    if (!ROOM_ID.test(id)) {
      showNotice('Room names are 1 to 64 letters, digits, _ or -.');
      return;
    }
    $('room').value = '';
    join(id);
  });
  $('send').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('text').value;
    if (!text || state.current === null) return;
    $('text').value = '';
    send(text);
  });
  $('older').addEventListener('click', () => {
    const room = state.rooms.get(state.current);
    if (room && state.connected && room.oldest) requestLog(room, room.oldest);
  });

  // A reload picks up where this tab was: same user, same rooms.
  const user = store.getItem('chatd.user');
  if (user) {
    const rooms = JSON.parse(store.getItem('chatd.rooms') || '[]');
    const current = store.getItem('chatd.current');
    for (const id of rooms) if (ROOM_ID.test(id)) state.rooms.set(id, newRoom(id));
    connect(user);
    if (current && state.rooms.has(current)) select(current);
    else renderRooms();
  }
})();
