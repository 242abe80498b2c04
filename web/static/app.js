// chatd's chat page: plain JavaScript over @stomp/stompjs (docs/protocol.md).
//
// Signing in: with a token (a JWT pasted, or given as #token=... in the
// URL) the page sends it as the CONNECT passcode and Authorization header
// and as the HTTP API's Bearer; with a name it uses dev mode's login. No
// endpoint says which mode the server runs in, so the first GET /api/rooms
// is the probe: a 401 says the credential does not fit.
//
// The rooms are the server's (GET /api/rooms), listed again on every
// connect and every half minute. Every room keeps its messages by id, so
// whatever arrives twice (history page, replay, live) shows once. After a
// reconnect each room resubscribes with since-id set to the newest id
// seen, and chatd replays what was missed. Messages typed while offline
// wait in an outbox and are sent with a client-msg-id, so a resend after
// a lost RECEIPT is stored once.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const ROOM_ID = /^[A-Za-z0-9_-]{1,64}$/;
  const PAGE = 50;
  const RELIST_MS = 30000;
  const store = window.sessionStorage; // per tab: two tabs may be two users

  const state = {
    cred: null, // {kind: 'dev'|'token', secret}
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
    relist: null, // interval timer
  };

  function newRoom(id) {
    return {
      id,
      name: id,
      listed: false, // seen in GET /api/rooms
      subs: [], // this connection's subscriptions
      msgs: new Map(), // message id -> message
      last: 0, // newest id seen
      oldest: 0, // oldest id loaded
      historyLoaded: false,
      noOlder: false,
      myRead: 0, // my read position as far as this page knows
      readSent: 0,
      // Unread counting before history is loaded: the API's count of
      // messages up to listedLast, plus live ones after it.
      apiUnread: 0,
      listedLast: 0,
      members: null, // [{userId, role}] from GET /api/rooms/{room}
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
    store.setItem('chatd.cred', JSON.stringify(state.cred));
    store.setItem('chatd.current', state.current || '');
  }

  // jwtSubject reads a token's sub claim, unverified: only to label the
  // page until CONNECTED names the user, and for dev mode's fallback.
  function jwtSubject(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(part), (c) => c.charCodeAt(0))));
      return typeof claims.sub === 'string' ? claims.sub : typeof claims.sub === 'number' ? String(claims.sub) : '';
    } catch (e) {
      return '';
    }
  }

  // HTTP API

  class APIError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body, cred = state.cred) {
    const init = { method, headers: { Authorization: `Bearer ${cred.secret}` } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      // 204, or not JSON
    }
    if (!resp.ok) throw new APIError(resp.status, (data && data.error) || `HTTP ${resp.status}`);
    return data;
  }

  // apiFailed reports a failed call; a 401 mid-session means the token
  // has expired: back to the sign-in form.
  function apiFailed(e, show) {
    if (e instanceof APIError && e.status === 401 && state.cred) {
      logout('Your session has expired: sign in again.');
      return;
    }
    show(e.message || String(e));
  }

  // Signing in

  async function signIn(cred) {
    $('login-error').hidden = true;
    $('login').querySelector('button').disabled = true;
    try {
      let rooms;
      try {
        rooms = await api('GET', '/api/rooms', undefined, cred);
      } catch (e) {
        if (!(e instanceof APIError) || e.status !== 401) throw e;
        // A server in dev mode takes no token, only a name: try the
        // token's subject as that name.
        const sub = cred.kind === 'token' ? jwtSubject(cred.secret) : '';
        if (!sub) throw e;
        const dev = { kind: 'dev', secret: sub };
        try {
          rooms = await api('GET', '/api/rooms', undefined, dev);
        } catch (e2) {
          throw e;
        }
        cred = dev;
      }
      start(cred, rooms);
    } catch (e) {
      let msg = e.message || String(e);
      if (e instanceof APIError && e.status === 401) {
        msg = cred.kind === 'token'
          ? 'The server refused this token (expired, or not meant for it).'
          : 'This server does not run in dev mode: sign in with a token.';
      }
      showLoginError(msg);
      if (cred.kind === 'dev') $('token').focus();
    } finally {
      $('login').querySelector('button').disabled = false;
    }
  }

  function showLoginError(msg) {
    $('login-error').textContent = msg;
    $('login-error').hidden = !msg;
  }

  function start(cred, rooms) {
    state.cred = cred;
    state.user = cred.kind === 'dev' ? cred.secret : jwtSubject(cred.secret) || '';
    $('me').textContent = state.user;
    $('login').hidden = true;
    $('chat').hidden = false;
    $('logout').hidden = false;
    const wanted = store.getItem('chatd.current');
    save();
    applyRooms(rooms);
    if (wanted && state.rooms.has(wanted)) select(wanted);
    else if (state.rooms.size > 0) select(state.rooms.keys().next().value);
    else renderAll();
    clearInterval(state.relist);
    state.relist = setInterval(relist, RELIST_MS);
    connect();
  }

  // Connection

  function setStatus(s) {
    const el = $('status');
    el.dataset.state = s;
    el.textContent = s;
  }

  function connect() {
    setStatus('connecting');
    let sessionUp = false; // did this attempt get CONNECTED?
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const headers = { host: location.hostname };
    if (state.cred.kind === 'dev') headers.login = state.cred.secret;
    else {
      // passcode is read whatever --jwt-header is; Authorization is its default.
      headers.passcode = state.cred.secret;
      headers.Authorization = `Bearer ${state.cred.secret}`;
    }
    const client = new StompJs.Client({
      brokerURL: `${proto}//${location.host}/ws`,
      connectHeaders: headers,
      reconnectDelay: 1000,
      connectionTimeout: 5000,
      heartbeatIncoming: 10000,
      heartbeatOutgoing: 10000,
      beforeConnect: () => { sessionUp = false; },
      onConnect: (f) => { sessionUp = true; onConnect(f); },
      onStompError: (f) => {
        const msg = f.headers.message || '';
        if (!sessionUp) {
          // Refused at CONNECT (a bad name, or a token that has expired
          // since): retrying would not help.
          logout(msg === 'unauthorized' ? 'The server refused the token: sign in again.' : msg || 'connection refused');
          return;
        }
        if (msg === 'credentials expired') {
          logout('Your session has expired: sign in again.');
          return;
        }
        showNotice(msg || 'server error');
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

  function onConnect(frame) {
    state.connected = true;
    state.logQueue = [];
    state.logInFlight = null;
    const name = frame.headers['user-name'];
    if (name && name !== state.user) {
      // The server's word on who this is (a token's claim may differ).
      state.user = name;
      $('me').textContent = name;
    }
    setStatus('connected');
    showNotice('');
    state.client.subscribe('/user/queue/chat.log', onLog);
    for (const room of state.rooms.values()) subscribeRoom(room);
    for (const [cid, m] of state.outbox) publish(cid, m);
    updateSendForm();
    const room = state.rooms.get(state.current);
    if (room) markRead(room);
    relist();
  }

  function logout(error) {
    const client = state.client;
    state.client = null;
    state.connected = false;
    if (client) client.deactivate();
    clearInterval(state.relist);
    for (const room of state.rooms.values()) clearTimeout(room.refresh);
    state.rooms.clear();
    state.current = null;
    state.outbox.clear();
    state.user = null;
    state.cred = null;
    store.clear();
    setStatus('offline');
    $('me').textContent = '';
    $('chat').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    showLoginError(error || '');
    $('messages').replaceChildren();
    $('rooms').replaceChildren();
    $('title').textContent = 'No room open';
    $('members').hidden = true;
    showNotice('');
    updateSendForm();
  }

  // Rooms

  async function relist() {
    if (!state.cred) return;
    try {
      applyRooms(await api('GET', '/api/rooms'));
      renderRooms();
    } catch (e) {
      apiFailed(e, () => {}); // a network blip: the next round lists again
    }
  }

  // applyRooms takes GET /api/rooms: new rooms are subscribed, rooms the
  // user has left or been removed from go.
  function applyRooms(list) {
    const seen = new Set();
    for (const r of list) {
      seen.add(r.id);
      let room = state.rooms.get(r.id);
      const isNew = !room;
      if (isNew) {
        room = newRoom(r.id);
        state.rooms.set(r.id, room);
      }
      room.listed = true;
      room.name = r.name || r.id;
      room.myRead = Math.max(room.myRead, r.lastReadId || 0);
      room.readSent = Math.max(room.readSent, r.lastReadId || 0);
      room.listedLast = r.lastMessage ? r.lastMessage.id : 0;
      room.apiUnread = r.unreadCount || 0;
      if (isNew) {
        // since-id from the listing: what comes after it is replayed, so
        // nothing falls between the listing and the subscription.
        room.last = Math.max(room.last, room.listedLast);
        room.known = true;
        if (state.connected) trySubscribe(room);
      }
    }
    for (const room of [...state.rooms.values()]) {
      if (room.listed && !seen.has(room.id)) dropRoom(room);
    }
  }

  function dropRoom(room) {
    for (const s of room.subs) {
      try { s.unsubscribe(); } catch (e) { /* connection gone */ }
    }
    clearTimeout(room.refresh);
    state.rooms.delete(room.id);
    if (state.current === room.id) {
      state.current = null;
      save();
      renderAll();
    }
  }

  function trySubscribe(room) {
    try {
      subscribeRoom(room);
    } catch (e) {
      // The connection has just gone: onConnect subscribes every room.
    }
  }

  function subscribeRoom(room) {
    const c = state.client;
    const headers = {};
    // Resume after the newest id known (from the listing, history or
    // live): chatd replays what this page missed, then goes on live.
    if (room.known || room.historyLoaded || room.last > 0) headers['since-id'] = String(room.last);
    room.subs = [
      c.subscribe(`/topic/chat.${room.id}`, (f) => onRoomMessage(room, f), headers),
      c.subscribe(`/topic/chat.${room.id}.read`, (f) => onReadEvent(room, f)),
    ];
    // Subscribed first, so nothing falls between the history page and live.
    if (!room.historyLoaded && room.id === state.current) requestLog(room, 0);
  }

  // createRoom is POST /api/rooms. In dev mode a room that exists is
  // joined by use instead, as dev mode lets anyone join.
  async function createRoom(id, name) {
    showCreateMsg('');
    const body = { id };
    if (name) body.name = name;
    try {
      await api('POST', '/api/rooms', body);
    } catch (e) {
      if (e instanceof APIError && e.status === 409 && state.cred.kind === 'dev') {
        join(id);
        return true;
      }
      if (e instanceof APIError && e.status === 409) {
        showCreateMsg(`Room ${id} exists already: a member can add you.`);
        return false;
      }
      apiFailed(e, showCreateMsg);
      return false;
    }
    join(id);
    relist();
    return true;
  }

  function join(id) {
    if (!state.rooms.has(id)) {
      const room = newRoom(id);
      state.rooms.set(id, room);
      if (state.connected) trySubscribe(room);
    }
    select(id);
  }

  function showCreateMsg(text) {
    $('create-msg').textContent = text;
    $('create-msg').hidden = !text;
  }

  async function loadMembers(room) {
    try {
      const r = await api('GET', `/api/rooms/${encodeURIComponent(room.id)}`);
      room.members = r.members || [];
      room.name = r.name || room.name;
      if (room.id === state.current) renderAll();
    } catch (e) {
      apiFailed(e, () => {});
    }
  }

  async function addMember(userId) {
    const room = state.rooms.get(state.current);
    if (!room) return;
    showMemberMsg('');
    try {
      await api('POST', `/api/rooms/${encodeURIComponent(room.id)}/members`, { userId });
      $('member').value = '';
      showMemberMsg(`Added ${userId}.`);
      await loadMembers(room);
    } catch (e) {
      apiFailed(e, showMemberMsg);
    }
  }

  function showMemberMsg(text) {
    $('member-msg').textContent = text;
    $('member-msg').hidden = !text;
  }

  function select(id) {
    state.current = id;
    save();
    const room = state.rooms.get(id);
    showNotice(room.note);
    showMemberMsg('');
    renderAll(true);
    if (state.connected && !room.historyLoaded) requestLog(room, 0);
    loadMembers(room);
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
    if (msgs.length < PAGE) room.noOlder = true;
    for (const m of msgs) merge(room, m, true);
    room.historyLoaded = true;
    changed(room);
  }

  function onRoomMessage(room, frame) {
    if (frame.headers.history === 'reset') {
      // The store was rebuilt: what this page held names nothing now.
      room.msgs.clear();
      room.last = room.oldest = room.myRead = room.readSent = room.listedLast = room.apiUnread = 0;
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
    }
    // Unread counts are chatd's to tell: read the loaded messages' current
    // counts again (and the members they count), once for a burst.
    clearTimeout(room.refresh);
    room.refresh = setTimeout(() => {
      if (state.connected && room.msgs.size > 0) requestLog(room, 0);
      if (room.id === state.current) loadMembers(room);
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
    if (room.id === state.current) return 0;
    let n = 0;
    for (const m of room.msgs.values()) {
      if (m.id > room.myRead && m.id > room.listedLast && m.userId !== state.user) n++;
    }
    // Up to listedLast the listing counted (the page may not hold those).
    return n + (room.myRead < room.listedLast ? room.apiUnread : 0);
  }

  // seenBy is how many members other than the sender and me have read m:
  // chatd's unreadCount counts the members other than the sender who
  // have not, so the rest have, less me if I am one of them.
  function seenBy(room, m) {
    if (!room.members || typeof m.unreadCount !== 'number') return 0;
    let n = room.members.length - 1 - m.unreadCount;
    if (m.userId !== state.user && room.members.some((x) => x.userId === state.user)) {
      // I count among the readers once chatd has my receipt; before then
      // I count among the unread, which subtracts me already.
      if (room.myRead >= m.id && room.readSent >= m.id) n -= 1;
    }
    return Math.max(0, n);
  }

  function renderAll(jump) {
    const room = state.rooms.get(state.current);
    $('title').textContent = room ? (room.name !== room.id ? `${room.name} (#${room.id})` : `# ${room.id}`) : 'No room open';
    $('members').hidden = !room;
    if (room) {
      const ms = room.members || [];
      $('member-count').textContent = room.members ? `(${ms.length})` : '';
      $('member-list').replaceChildren(...ms.map((x) => {
        const li = document.createElement('li');
        li.textContent = x.role && x.role !== 'member' ? `${x.userId} (${x.role})` : x.userId;
        return li;
      }));
    }
    renderRooms();
    renderMessages(jump);
    updateSendForm();
  }

  function renderRooms() {
    const items = [...state.rooms.values()].map((room) => {
      const li = document.createElement('li');
      li.dataset.room = room.id;
      if (room.id === state.current) li.className = 'current';
      const b = document.createElement('button');
      b.type = 'button';
      b.title = room.id;
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = room.name;
      const n = unreadForMe(room);
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = n > 99 ? '99+' : String(n);
      badge.title = `${n} unread`;
      badge.hidden = n === 0;
      b.append(name, badge);
      b.addEventListener('click', () => select(room.id));
      li.append(b);
      return li;
    });
    $('rooms').replaceChildren(...items);
  }

  const LINK = /https?:\/\/[^\s<>"]+/gi;
  const LONG = /(\S{30,})/;

  // appendText puts s into el as text nodes, links (http and https only)
  // as anchors, and tokens too long for a line in spans that may break
  // anywhere. Nothing from the message is ever parsed as HTML.
  function appendText(el, s) {
    let at = 0;
    for (const match of s.matchAll(LINK)) {
      const url = match[0].replace(/[.,;:!?)\]}'*]+$/, '');
      let href = null;
      try {
        const u = new URL(url);
        if (u.protocol === 'http:' || u.protocol === 'https:') href = u.href;
      } catch (e) {
        // not a URL after all: stays text
      }
      if (!href) continue;
      appendWords(el, s.slice(at, match.index));
      const a = document.createElement('a');
      a.href = href;
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
      a.textContent = url;
      a.className = 'long'; // a URL is one token: it may break anywhere
      el.append(a);
      at = match.index + url.length;
    }
    appendWords(el, s.slice(at));
  }

  function appendWords(el, s) {
    s.split(LONG).forEach((part, i) => {
      if (!part) return;
      if (i % 2 === 1) {
        const span = document.createElement('span');
        span.className = 'long';
        span.textContent = part;
        el.append(span);
      } else {
        el.append(part);
      }
    });
  }

  function dayKey(d) {
    return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
  }

  function dayLabel(d) {
    const full = d.toLocaleDateString([], { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' });
    const today = new Date();
    const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
    if (dayKey(d) === dayKey(today)) return `Today, ${full}`;
    if (dayKey(d) === dayKey(yesterday)) return `Yesterday, ${full}`;
    return full;
  }

  function renderMessages(jump) {
    const list = $('messages');
    const room = state.rooms.get(state.current);
    if (!room) {
      list.replaceChildren();
      $('older').hidden = true;
      return;
    }
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    const ids = [...room.msgs.keys()].sort((a, b) => a - b);
    const items = [];
    let day = '';
    for (const id of ids) {
      const m = room.msgs.get(id);
      const at = new Date(m.createdAt);
      const key = dayKey(at);
      if (key !== day) {
        day = key;
        const sep = document.createElement('li');
        sep.className = 'day';
        sep.dataset.day = key;
        sep.textContent = dayLabel(at);
        items.push(sep);
      }
      const li = document.createElement('li');
      li.dataset.id = String(id);
      li.className = m.userId === state.user ? 'msg mine' : 'msg';
      const meta = document.createElement('div');
      meta.className = 'meta';
      const who = document.createElement('span');
      who.className = 'who';
      who.textContent = m.userId;
      const time = document.createElement('time');
      time.dateTime = m.createdAt;
      time.title = at.toLocaleString([], { dateStyle: 'full', timeStyle: 'short' });
      time.textContent = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      meta.append(who, time);
      const text = document.createElement('div');
      text.className = 'text';
      appendText(text, String(m.message));
      li.append(meta, text);
      const n = seenBy(room, m);
      if (n > 0) {
        const seen = document.createElement('div');
        seen.className = 'seen';
        seen.textContent = `seen by ${n}`;
        li.append(seen);
      }
      items.push(li);
    }
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
    const token = $('token').value.trim();
    const name = $('name').value.trim();
    if (token) signIn({ kind: 'token', secret: token });
    else if (name) signIn({ kind: 'dev', secret: name });
    else showLoginError('Paste a token, or give a name on a server in dev mode.');
  });
  $('logout').addEventListener('click', () => logout(''));
  $('create').addEventListener('submit', async (e) => {
    e.preventDefault();
    const id = $('room').value.trim();
    if (!ROOM_ID.test(id)) {
      showCreateMsg('Room ids are 1 to 64 letters, digits, _ or -.');
      return;
    }
    if (await createRoom(id, $('room-name').value.trim())) {
      $('room').value = '';
      $('room-name').value = '';
      $('new-room').open = false;
    }
  });
  $('add-member').addEventListener('submit', (e) => {
    e.preventDefault();
    const id = $('member').value.trim();
    if (id) addMember(id);
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
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && state.connected) relist();
  });

  // A token in the URL fragment (#token=...) signs in at once; the
  // fragment never reaches a server, and is taken out of the address bar
  // and history. Otherwise a reload picks up where this tab was.
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromURL = fragment.get('token') || fragment.get('access_token');
  if (fromURL) {
    history.replaceState(null, '', location.pathname + location.search);
    signIn({ kind: 'token', secret: fromURL });
  } else {
    try {
      const cred = JSON.parse(store.getItem('chatd.cred') || 'null');
      if (cred && (cred.kind === 'dev' || cred.kind === 'token') && cred.secret) signIn(cred);
    } catch (e) {
      store.clear();
    }
  }
})();
