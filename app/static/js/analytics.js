// Google Analytics, loaded only when the page carries #analytics-config (the server decides:
// configured, no secret in the URL, no Do Not Track / Global Privacy Control). The config
// holds the route's pattern as page location and title, so no id, name or query string
// ever reaches Google; no user id; Google signals and ad personalisation off.
(function () {
  "use strict";
  var tag = document.getElementById("analytics-config");
  if (!tag) { return; }
  // The browser may say it at the JavaScript level only (an extension, a setting).
  if (navigator.globalPrivacyControl === true || navigator.doNotTrack === "1" || window.doNotTrack === "1") {
    return;
  }
  var config;
  try {
    config = JSON.parse(tag.getAttribute("data-config"));
  } catch (error) {
    return;
  }
  window.dataLayer = window.dataLayer || [];
  function gtag() { window.dataLayer.push(arguments); }
  gtag("js", new Date());
  gtag("set", {
    allow_google_signals: false,
    allow_ad_personalization_signals: false,
    page_location: config.params.page_location,
    page_title: config.params.page_title,
    page_referrer: config.params.page_referrer
  });
  gtag("config", config.id, config.params);
  var script = document.createElement("script");
  script.async = true;
  script.src = config.src;
  document.head.appendChild(script);
})();
