// Placeholder bundle for the PeerPrep frontend image. The real SPA (built
// by Vite from the `frontend` build context) replaces this whole folder.
(function () {
  "use strict";
  var routes = ["user", "question", "matching", "history", "collaboration", "chat"];
  var list = document.getElementById("apis");
  routes.forEach(function (name) {
    var li = document.createElement("li");
    var a = document.createElement("a");
    a.href = "/" + name + "-service-api/";
    a.textContent = "/" + name + "-service-api/";
    li.appendChild(a);
    list.appendChild(li);
  });
  document.getElementById("route").textContent = window.location.pathname;
  fetch("/health").then(function (r) { return r.json(); }).then(function (h) {
    document.getElementById("health").textContent = h.status;
  }).catch(function () {
    document.getElementById("health").textContent = "unreachable";
  });
})();
