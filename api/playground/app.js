// Rowguard's GraphiQL page. Served by Rowguard itself (no inline script, so the page's
// Content-Security-Policy can forbid inline code). The bearer token lives only in this page's
// memory: it is never stored, and never put in a URL.
(function () {
  "use strict";

  var tokenInput = document.getElementById("token");
  var params = new URLSearchParams(window.location.search);
  var defaultQuery = params.get("query") || "{\n  me {\n    displayName\n  }\n}\n";

  // In `rowguard dev` the page lists demo users; picking one fetches a token from the
  // development identity provider (loopback only).
  var picker = document.getElementById("demo-user");
  if (picker) {
    picker.addEventListener("change", function () {
      if (!picker.value) return;
      fetch(picker.value, { method: "POST" })
        .then(function (r) { return r.json(); })
        .then(function (body) { tokenInput.value = body.id_token || body.access_token || ""; })
        .catch(function () { tokenInput.value = ""; });
    });
  }

  function fetcher(graphQLParams) {
    var headers = { "Content-Type": "application/json", "Accept": "application/json" };
    var token = tokenInput.value.trim();
    if (token) headers["Authorization"] = "Bearer " + token;
    return fetch(window.location.pathname, {
      method: "POST",
      headers: headers,
      body: JSON.stringify(graphQLParams),
      credentials: "omit"
    }).then(function (response) { return response.json(); });
  }

  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: defaultQuery,
      shouldPersistHeaders: false,
      storage: { getItem: function () { return null; }, setItem: function () {}, removeItem: function () {}, clear: function () {}, length: 0 }
    })
  );
})();
