// broker/src/dashboard_http.h — the broker's HTTP listener (internal to the broker).
//
// Serves the dashboard page (compiled in, see dashboard_assets.h), its JSON API, /metrics
// (Prometheus text format) and /status, and takes the operator's actions:
//
//   GET  /                                     the page (+ /dashboard.js, /dashboard.css)
//   GET  /api/runs                             every run, without its history
//   GET  /api/runs/RUN?rounds_after=R&events_after=E   one run: rounds > R, events > E
//   GET  /api/operator                         200 if the request carries the operator token, else 401
//   POST /api/runs/RUN/pause | /resume         operator: stop / restart starting rounds
//   POST /api/runs/RUN/members/ID/evict        operator: evict a member and refuse its key
//   GET  /metrics                              Prometheus text format
//   GET  /status                               the older JSON status
//
// Operator requests carry `Authorization: Bearer TOKEN` (the token printed at start); without
// it the listener is read-only. Every request is answered by value: a bad one gets a 4xx with
// a JSON {error, hint}, and a handler that throws gets a 500 — none of it reaches the broker's
// message loop, which runs on its own thread and shares only the core's lock.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pico/broker/core.h"

namespace pico::broker {

class DashboardHttp {
 public:
  struct Hooks {
    // Runs `fn` with the core locked (the message loop holds the same lock).
    std::function<void(const std::function<void(BrokerCore&)>& fn)> with_core;
    // Messages an operator action produced: the message loop sends them.
    std::function<void(std::vector<Outgoing>)> deliver;
    std::function<double()> now;  // the broker's clock
  };

  // `address` is ADDR:PORT or PORT (then 127.0.0.1); port 0 picks a free one. Binds at once:
  // throws pico::Error naming the address when it cannot.
  DashboardHttp(const std::string& address, std::string token, Hooks hooks);
  ~DashboardHttp();
  DashboardHttp(const DashboardHttp&) = delete;
  DashboardHttp& operator=(const DashboardHttp&) = delete;

  const std::string& host() const;
  int port() const;
  // Serves on a background thread until stop() (or destruction).
  void start();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pico::broker
