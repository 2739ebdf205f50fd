// The broker's HTTP listener (see dashboard_http.h).
#include "dashboard_http.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstring>
#include <thread>

#include "dashboard_assets.h"
#include "pico/common/error.h"
#include "pico/common/log.h"

namespace pico::broker {
namespace {

constexpr std::size_t kHttpThreads = 8;
constexpr std::size_t kMaxHeadBytes = 16 * 1024;  // request line + headers
constexpr std::size_t kMaxBodyBytes = 4096;       // operator actions carry no body worth more
constexpr int kHeadDeadlineMs = 10000;            // the whole head must arrive within this
constexpr int kIoTimeoutMs = 5000;                // each read or write after that
// A view asks for at most this much history per request; the page pages through more.
constexpr std::int64_t kMaxRoundsPerView = 5000;
constexpr std::int64_t kMaxEventsPerView = 500;
// /metrics reads each run's recent rounds: the last val_loss may be a few rounds back.
constexpr std::int64_t kMetricsRounds = 64;

void send_error(httplib::Response& res, int status, const std::string& error, const std::string& hint) {
  res.status = status;
  res.set_content(nlohmann::json{{"error", error}, {"hint", hint}}.dump(), "application/json");
}

// An integer query parameter in [lo, hi]; absent: `fallback`. False (and a 400) when malformed.
bool int_param(const httplib::Request& req, httplib::Response& res, const char* name, std::int64_t fallback,
               std::int64_t lo, std::int64_t hi, std::int64_t& out) {
  out = fallback;
  if (!req.has_param(name)) return true;
  if (req.get_param_value_count(name) != 1) {
    send_error(res, 400, str("query parameter '", name, "' is given more than once"), "give it once");
    return false;
  }
  const std::string v = req.get_param_value(name);
  std::int64_t x = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc() || end != v.data() + v.size() || x < lo || x > hi) {
    send_error(res, 400,
               str("query parameter ", name, "='", v.substr(0, 64), "' is not an integer in [", lo, ", ", hi, "]"),
               str("e.g. ?", name, "=", std::max<std::int64_t>(lo, 0)));
    return false;
  }
  out = x;
  return true;
}

// Compares without an early exit, so that response times do not reveal the token.
bool same_secret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

using Clock = std::chrono::steady_clock;

int poll_one(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, timeout_ms);
}

// A connection as httplib reads it, with a cap on everything it may read: a request is a
// bounded head and a bounded body, whatever the client sends.
class BoundedStream final : public httplib::Stream {
 public:
  explicit BoundedStream(int fd) : fd_(fd) {}
  bool is_readable() const override { return poll_one(fd_, POLLIN, kIoTimeoutMs) > 0; }
  bool is_writable() const override { return poll_one(fd_, POLLOUT, kIoTimeoutMs) > 0; }
  ssize_t read(char* ptr, std::size_t size) override {
    if (read_ >= kMaxHeadBytes + kMaxBodyBytes + 1024) return 0;  // the end, as far as httplib is concerned
    size = std::min(size, kMaxHeadBytes + kMaxBodyBytes + 1024 - read_);
    if (poll_one(fd_, POLLIN, kIoTimeoutMs) <= 0) return -1;
    const ssize_t n = ::recv(fd_, ptr, size, 0);
    if (n > 0) read_ += static_cast<std::size_t>(n);
    return n;
  }
  ssize_t write(const char* ptr, std::size_t size) override {
    if (poll_one(fd_, POLLOUT, kIoTimeoutMs) <= 0) return -1;
    return ::send(fd_, ptr, size, MSG_NOSIGNAL);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { address(::getpeername, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address(::getsockname, ip, port); }
  socket_t socket() const override { return fd_; }

 private:
  template <typename Fn>
  void address(Fn fn, std::string& ip, int& port) const {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ip.clear();
    port = 0;
    if (fn(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return;
    char buf[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
      ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
      port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
      ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
      port = ntohs(a->sin6_port);
    }
    ip = buf;
  }
  int fd_;
  std::size_t read_ = 0;
};

// httplib reads headers without a limit on their number or total size: this server looks
// at each connection's head first (without consuming it) and answers 431 when it is too
// large, or 408 when it does not arrive in time. Each connection serves one request.
class BoundedServer final : public httplib::Server {
 private:
  enum class Head { kComplete, kTooLarge, kTooSlow, kClosed };

  static Head peek_head(int fd) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(kHeadDeadlineMs);
    std::string buf(kMaxHeadBytes + 1, '\0');
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return Head::kTooSlow;
      if (poll_one(fd, POLLIN, static_cast<int>(left)) <= 0) return Head::kTooSlow;
      const ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_PEEK);
      if (n <= 0) return Head::kClosed;
      const std::string_view seen(buf.data(), static_cast<std::size_t>(n));
      if (seen.find("\r\n\r\n") != std::string_view::npos || seen.find("\n\n") != std::string_view::npos)
        return Head::kComplete;
      if (static_cast<std::size_t>(n) > kMaxHeadBytes) return Head::kTooLarge;
      // More to come: wait a little rather than spin on the same peeked bytes.
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  static void answer(int fd, int status, const char* reason, const std::string& error, const std::string& hint) {
    const std::string body = nlohmann::json{{"error", error}, {"hint", hint}}.dump();
    const std::string msg =
        str("HTTP/1.1 ", status, " ", reason, "\r\nContent-Type: application/json\r\nContent-Length: ", body.size(),
            "\r\nConnection: close\r\n\r\n", body);
    if (poll_one(fd, POLLOUT, kIoTimeoutMs) > 0) (void)::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL);
  }

  // Closes after the client has had the answer: closing with unread input would reset the
  // connection and could destroy the answer in flight, so read (and drop) a little first.
  static void lingering_close(int fd) {
    ::shutdown(fd, SHUT_WR);
    char sink[4096];
    const auto until = Clock::now() + std::chrono::milliseconds(1000);
    std::size_t drained = 0;
    while (Clock::now() < until && drained < (1u << 20) && poll_one(fd, POLLIN, 100) > 0) {
      const ssize_t n = ::recv(fd, sink, sizeof sink, 0);
      if (n <= 0) break;
      drained += static_cast<std::size_t>(n);
    }
    ::close(fd);
  }

  bool process_and_close_socket(socket_t sock) override {
    bool ok = false;
    switch (peek_head(sock)) {
      case Head::kComplete: {
        BoundedStream stream(sock);
        bool closed = false;
        ok = process_request(stream, /*close_connection=*/true, closed, nullptr);
        break;
      }
      case Head::kTooLarge:
        answer(sock, 431, "Request Header Fields Too Large",
               str("the request's head is over ", kMaxHeadBytes, " bytes"),
               "the dashboard needs no large headers or URLs");
        break;
      case Head::kTooSlow:
        answer(sock, 408, "Request Timeout",
               str("the request's head did not arrive within ", kHeadDeadlineMs / 1000, " s"), "");
        break;
      case Head::kClosed:
        break;
    }
    lingering_close(sock);
    return ok;
  }
};

}  // namespace

struct DashboardHttp::Impl {
  std::string host;
  int port = 0;
  std::string token;
  Hooks hooks;
  BoundedServer server;
  std::thread thread;

  bool is_operator(const httplib::Request& req) const {
    const std::string auth = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    return !token.empty() && auth.rfind(prefix, 0) == 0 && same_secret(auth.substr(prefix.size()), token);
  }

  // 401 unless the request carries the operator token.
  bool require_operator(const httplib::Request& req, httplib::Response& res) const {
    if (is_operator(req)) return true;
    res.set_header("WWW-Authenticate", "Bearer realm=\"pico broker\"");
    send_error(res, 401,
               req.has_header("Authorization") ? "wrong operator token" : "this action needs the operator token",
               "the broker printed its operator token at start (\"operator token: …\"); send it as "
               "Authorization: Bearer TOKEN, or open the dashboard link it printed");
    return false;
  }

  // Runs an operator action on the core and hands what it produced to the message loop.
  void act(httplib::Response& res, const std::function<std::vector<Outgoing>(BrokerCore&, double)>& action) {
    std::vector<Outgoing> out;
    try {
      hooks.with_core([&](BrokerCore& core) { out = action(core, hooks.now()); });
    } catch (const OperatorError& e) {
      send_error(res, e.kind == OperatorError::Kind::kNotFound ? 404 : 409, e.what(),
                 "reload the dashboard: the run or member may have changed");
      return;
    }
    hooks.deliver(std::move(out));
    res.set_content(R"({"ok":true})", "application/json");
  }

  void routes() {
    for (std::size_t i = 0; i < kDashboardAssetCount; ++i) {
      const DashboardAsset& a = kDashboardAssets[i];
      std::string pattern;
      for (const char* p = a.path; *p; ++p) pattern += (*p == '.' ? std::string("\\.") : std::string(1, *p));
      server.Get(pattern, [&a](const httplib::Request&, httplib::Response& res) {
        res.set_content(reinterpret_cast<const char*>(a.data), a.size, a.content_type);
      });
    }
    server.Get("/status", [this](const httplib::Request&, httplib::Response& res) {
      nlohmann::json j;
      hooks.with_core([&](BrokerCore& core) { j = core.status(hooks.now()); });
      res.set_content(j.dump(2), "application/json");
    });
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      std::vector<RunView> views;
      ViewQuery q;
      q.rounds_limit = kMetricsRounds;
      q.events_limit = 0;
      q.former_members_limit = 0;
      hooks.with_core([&](BrokerCore& core) {
        const double now = hooks.now();
        for (const auto& id : core.run_ids())
          if (auto v = core.run_view(id, q, now)) views.push_back(std::move(*v));
      });
      res.set_content(prometheus_text(views), "text/plain; version=0.0.4; charset=utf-8");
    });
    server.Get("/api/runs", [this](const httplib::Request&, httplib::Response& res) {
      nlohmann::json runs = nlohmann::json::array();
      ViewQuery q;
      q.rounds_limit = 1;
      q.events_limit = 0;
      q.former_members_limit = 0;
      hooks.with_core([&](BrokerCore& core) {
        const double now = hooks.now();
        for (const auto& id : core.run_ids())
          if (auto v = core.run_view(id, q, now)) {
            nlohmann::json j = to_json(*v);
            j.erase("ledger");
            j.erase("events");
            runs.push_back(std::move(j));
          }
      });
      res.set_content(nlohmann::json{{"runs", runs}}.dump(), "application/json");
    });
    server.Get("/api/operator", [this](const httplib::Request& req, httplib::Response& res) {
      if (require_operator(req, res)) res.set_content(R"({"operator":true})", "application/json");
    });
    server.Get(R"(/api/runs/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
      const std::string id = req.matches[1];
      if (!is_valid_run_id(id)) return send_error(res, 400, "a run id is [A-Za-z0-9_-]{1,64}", "check the URL");
      ViewQuery q;
      if (!int_param(req, res, "rounds_after", -1, -1, std::int64_t{1} << 53, q.rounds_after)) return;
      if (!int_param(req, res, "events_after", 0, 0, std::int64_t{1} << 53, q.events_after)) return;
      if (!int_param(req, res, "rounds_limit", 2000, 0, kMaxRoundsPerView, q.rounds_limit)) return;
      if (!int_param(req, res, "events_limit", 200, 0, kMaxEventsPerView, q.events_limit)) return;
      std::optional<RunView> view;
      hooks.with_core([&](BrokerCore& core) { view = core.run_view(id, q, hooks.now()); });
      if (!view) return send_error(res, 404, str("no run '", id, "' on this broker"), "GET /api/runs lists its runs");
      res.set_content(to_json(*view).dump(), "application/json");
    });
    server.Post(R"(/api/runs/([^/]+)/(pause|resume))", [this](const httplib::Request& req, httplib::Response& res) {
      if (!require_operator(req, res)) return;
      const std::string id = req.matches[1];
      const bool pause = req.matches[2] == "pause";
      act(res, [&](BrokerCore& core, double now) { return core.operator_pause(id, pause, now); });
    });
    server.Post(
        R"(/api/runs/([^/]+)/members/([^/]+)/evict)", [this](const httplib::Request& req, httplib::Response& res) {
          if (!require_operator(req, res)) return;
          const std::string id = req.matches[1], member = req.matches[2];
          std::int64_t mid = 0;
          const auto [end, ec] = std::from_chars(member.data(), member.data() + member.size(), mid);
          if (ec != std::errc() || end != member.data() + member.size() || mid < 0)
            return send_error(res, 400, str("member id '", member.substr(0, 32), "' is not a non-negative integer"),
                              "use the member id the dashboard lists");
          act(res, [&](BrokerCore& core, double now) { return core.operator_evict(id, mid, now); });
        });
    // Anything else that ends in an error status without a body gets a JSON one.
    server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      const bool not_found = res.status == 404;
      send_error(res, res.status,
                 not_found ? str("no such page: ", req.method, " ", req.path.substr(0, 200)) : "bad request",
                 not_found ? "the dashboard is at /, its data under /api/runs, metrics at /metrics" : "");
    });
    server.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      log_warn("broker http: ", req.method, " ", req.path.substr(0, 200), " failed: ", what);
      send_error(res, 500, what, "this is a bug in pico's broker; its log has the request");
    });
  }
};

DashboardHttp::DashboardHttp(const std::string& address, std::string token, Hooks hooks)
    : impl_(std::make_unique<Impl>()) {
  auto& s = *impl_;
  s.token = std::move(token);
  s.hooks = std::move(hooks);
  const auto colon = address.rfind(':');
  s.host = colon == std::string::npos ? "127.0.0.1" : address.substr(0, colon);
  const std::string port = colon == std::string::npos ? address : address.substr(colon + 1);
  int p = -1;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (s.host.empty() || ec != std::errc() || end != port.data() + port.size() || p < 0 || p > 65535)
    throw Error(str("bad --http '", address, "'"), "write PORT (on 127.0.0.1) or ADDR:PORT, e.g. 8080 or 0.0.0.0:8080");
  s.server.new_task_queue = [] { return new httplib::ThreadPool(kHttpThreads); };
  // One request per connection (BoundedServer): a browser polling once a second would
  // otherwise hold a pool thread idle between its polls, and twenty would starve the pool.
  s.server.set_payload_max_length(kMaxBodyBytes);
  s.server.set_default_headers({{"X-Content-Type-Options", "nosniff"},
                                {"X-Frame-Options", "DENY"},
                                {"Referrer-Policy", "no-referrer"},
                                {"Cache-Control", "no-store"},
                                {"Content-Security-Policy",
                                 "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"}});
  s.routes();
  s.port = p == 0 ? s.server.bind_to_any_port(s.host) : (s.server.bind_to_port(s.host, p) ? p : -1);
  if (s.port <= 0)
    throw Error(str("the broker cannot serve HTTP on ", address),
                "choose a free port, and an address of this machine, for --http");
}

DashboardHttp::~DashboardHttp() {
  stop();
}

const std::string& DashboardHttp::host() const {
  return impl_->host;
}
int DashboardHttp::port() const {
  return impl_->port;
}

void DashboardHttp::start() {
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
  // stop() before the server runs would not stop it: wait until it does.
  for (int i = 0; i < 5000 && !impl_->server.is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void DashboardHttp::stop() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace pico::broker
