// The browser side of scenario.js: the test drives it through
// window.state, startRun, proceed and startConnect (e2e/clients_test.go).
'use strict';

// state.phase: "ready" once the libraries loaded, "running",
// "disconnected" (the first session closed; state.report holds what it
// saw; proceed() goes on), "done" (state.report is the full report).
window.state = {
  phase: window.SockJS && window.Stomp && window.StompJs && window.chatdClients ? 'ready' : 'missing libraries',
  libraries: {
    SockJS: typeof window.SockJS,
    Stomp: typeof window.Stomp,
    StompJs: typeof window.StompJs,
    chatdClients: typeof window.chatdClients,
  },
};

function libs() {
  return { SockJS: window.SockJS, Stomp: window.Stomp, StompJs: window.StompJs };
}

function show() {
  document.getElementById('out').textContent = JSON.stringify(window.state, null, 2);
}

window.startRun = function (params) {
  window.state.phase = 'running';
  window.chatdClients.run(libs(), params, {
    between: function (report) {
      window.state.report = report;
      window.state.phase = 'disconnected';
      show();
      return new Promise(function (resolve) {
        window.proceed = function () {
          window.state.phase = 'resumed';
          resolve();
        };
      });
    },
  }).then(function (report) {
    window.state.report = report;
    window.state.phase = 'done';
    show();
  });
};

window.startConnect = function (params) {
  window.state.phase = 'running';
  window.chatdClients.tryConnect(libs(), params).then(function (outcome) {
    window.state.outcome = outcome;
    window.state.phase = 'done';
    show();
  });
};
