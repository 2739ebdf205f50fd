// pico top — a run's live picture in a terminal (what the broker's dashboard page shows),
// for people on a server over SSH. Reads the broker's HTTP API (http://HOST:PORT) or asks
// the broker itself over its CURVE socket (a join code). Read-only: operator actions are on
// the page.
#include <httplib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "commands.h"
#include "pico/broker/client.h"
#include "pico/comm/curve_keys.h"
#include "pico/common/error.h"
#include "pico/common/progress.h"

namespace pico::apps {
namespace {

struct TopArgs {
  std::string target;  // http://HOST:PORT[/] or pico://… join code
  std::string run;
  bool once = false;
  double interval_s = 1;
  int rounds = 8;
  int events = 8;
};

// Where the views come from: the HTTP API, or the broker protocol (status_query with run_id).
class ViewSource {
 public:
  virtual ~ViewSource() = default;
  virtual std::vector<std::string> run_ids() = 0;
  virtual nlohmann::json run(const std::string& id, std::int64_t rounds_after, std::int64_t events_after) = 0;
};

class HttpSource final : public ViewSource {
 public:
  explicit HttpSource(const std::string& url) : url_(url) {
    std::string rest = url.substr(std::string("http://").size());
    rest = rest.substr(0, rest.find('/'));
    const auto colon = rest.rfind(':');
    host_ = colon == std::string::npos ? rest : rest.substr(0, colon);
    port_ = colon == std::string::npos ? 80 : std::atoi(rest.substr(colon + 1).c_str());
    if (host_.empty() || port_ <= 0 || port_ > 65535)
      throw Error(str("bad dashboard URL '", url, "'"), "write http://HOST:PORT, e.g. http://127.0.0.1:8080");
    client_ = std::make_unique<httplib::Client>(host_, port_);
    client_->set_connection_timeout(3, 0);
    client_->set_read_timeout(5, 0);
  }
  std::vector<std::string> run_ids() override {
    std::vector<std::string> ids;
    const nlohmann::json runs = get("/api/runs");
    for (const auto& r : runs.at("runs")) ids.push_back(r.at("run_id").get<std::string>());
    return ids;
  }
  nlohmann::json run(const std::string& id, std::int64_t rounds_after, std::int64_t events_after) override {
    return get(str("/api/runs/", id, "?rounds_after=", rounds_after, "&events_after=", events_after));
  }

 private:
  nlohmann::json get(const std::string& path) {
    auto res = client_->Get(path.c_str());
    if (!res)
      throw Error(
          str("cannot reach the dashboard at ", url_, ": ", httplib::to_string(res.error())),
          "is the broker running with --http, and is this its address? (over SSH: ssh -L PORT:127.0.0.1:PORT HOST)");
    auto j = nlohmann::json::parse(res->body, nullptr, false);
    if (res->status != 200) {
      const std::string why =
          !j.is_discarded() && j.is_object() ? j.value("error", std::string("?")) : res->body.substr(0, 200);
      throw Error(str(url_, path, " answered ", res->status, ": ", why),
                  j.is_object() ? j.value("hint", std::string()) : std::string());
    }
    if (j.is_discarded())
      throw Error(str(url_, path, " did not answer JSON"), "is this a pico broker's --http address?");
    return j;
  }
  std::string url_, host_;
  int port_ = 0;
  std::unique_ptr<httplib::Client> client_;
};

class BrokerSource final : public ViewSource {
 public:
  explicit BrokerSource(const std::string& code) : code_(broker::parse_join_code(code)) {
    broker::BrokerClientOptions o;
    o.endpoint = code_.endpoint();
    o.broker_public_key = code_.broker_key;
    const auto mine = comm::curve_generate_keypair();  // a viewer needs no identity
    o.public_key = mine.public_key;
    o.secret_key = mine.secret_key;
    o.heartbeat_interval = std::chrono::hours(1);
    client_ = std::make_unique<broker::BrokerClient>(o);
  }
  std::vector<std::string> run_ids() override { return {code_.run_id}; }
  nlohmann::json run(const std::string& id, std::int64_t rounds_after, std::int64_t events_after) override {
    return client_->request(broker::StatusQuery{id, rounds_after, events_after}, "", std::chrono::seconds(10)).body;
  }

 private:
  broker::JoinCode code_;
  std::unique_ptr<broker::BrokerClient> client_;
};

// ---- formatting ------------------------------------------------------------------------------

double num(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : std::nan("");
}

std::string fmt(double v, int precision = 4) {
  if (!std::isfinite(v)) return "—";
  const double a = std::fabs(v);
  char buf[32];
  if (a >= 1e9)
    std::snprintf(buf, sizeof buf, "%.1fG", v / 1e9);
  else if (a >= 1e6)
    std::snprintf(buf, sizeof buf, "%.1fM", v / 1e6);
  else if (a >= 1e4)
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else if (a >= 100)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
  return buf;
}

std::string bytes(double v) {
  return std::isfinite(v) ? format_bytes(v) : "—";
}
std::string secs(double v) {
  return std::isfinite(v) ? format_duration(v) : "—";
}

std::string clock_time(double t) {
  const std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

// ▁▂▃▄▅▆▇█ over the values (NaNs skipped), at most `width` of the newest.
std::string sparkline(std::vector<double> v, std::size_t width) {
  static const char* kBlocks[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
  std::vector<double> f;
  for (double x : v)
    if (std::isfinite(x)) f.push_back(x);
  if (f.size() > width) f.erase(f.begin(), f.end() - static_cast<std::ptrdiff_t>(width));
  if (f.empty()) return "";
  double lo = f[0], hi = f[0];
  for (double x : f) lo = std::min(lo, x), hi = std::max(hi, x);
  std::string out;
  for (double x : f) out += kBlocks[hi > lo ? static_cast<int>(std::lround((x - lo) / (hi - lo) * 7)) : 3];
  return out;
}

std::string pad(const std::string& s, std::size_t w, bool right = true) {
  // Width in code points, so that "…" and "—" count once.
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  if (n >= w) return s;
  return right ? std::string(w - n, ' ') + s : s + std::string(w - n, ' ');
}

int terminal_width() {
  winsize ws{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40) return ws.ws_col;
  return 110;
}

// What `pico top` keeps between refreshes: like the page, it asks only for what is new.
struct TopState {
  std::map<std::int64_t, nlohmann::json> rounds;
  std::vector<nlohmann::json> events;
  std::int64_t last_event = 0;
  nlohmann::json view;

  void merge(nlohmann::json v) {
    for (auto& r : v.at("rounds")) rounds[r.at("round").get<std::int64_t>()] = r;
    while (rounds.size() > 500) rounds.erase(rounds.begin());
    for (auto& e : v.at("events")) {
      last_event = std::max(last_event, e.at("id").get<std::int64_t>());
      events.push_back(e);
    }
    if (events.size() > 100) events.erase(events.begin(), events.end() - 100);
    view = std::move(v);
  }
  std::int64_t rounds_after() const {
    return rounds.empty() ? -1 : std::max<std::int64_t>(-1, rounds.rbegin()->first - 10);
  }
};

std::string render(const TopState& st, const TopArgs& a, int width) {
  const auto& v = st.view;
  std::ostringstream o;
  std::vector<double> losses, vals;
  double sent = 0, ddp = 0, val = std::nan("");
  for (const auto& [r, s] : st.rounds) {
    losses.push_back(num(s, "loss"));
    if (std::isfinite(num(s, "val_loss"))) val = num(s, "val_loss");
    if (num(s, "ddp_bytes") > 0) sent += num(s, "bytes"), ddp += num(s, "ddp_bytes");
  }
  const nlohmann::json* last = st.rounds.empty() ? nullptr : &st.rounds.rbegin()->second;
  const std::string algorithm = v.value("algorithm", std::string());
  o << "pico top · run " << v.value("run_id", std::string("?")) << (algorithm.empty() ? "" : " · " + algorithm) << " · "
    << v.value("phase", std::string("?")) << (v.value("paused", false) ? " (paused)" : "") << " · round "
    << v.value("round", 0) << " · " << v.value("active_members", 0) << " members · "
    << clock_time(static_cast<double>(std::time(nullptr))) << "\n";
  o << "tokens " << fmt(num(v, "tokens")) << "   tok/s " << fmt(num(v, "tokens_per_s")) << "   loss "
    << fmt(last ? num(*last, "loss") : std::nan("")) << "   val " << fmt(val) << "   sent "
    << bytes(num(v, "bytes_sent")) << "   bytes vs ddp " << (ddp > 0 ? fmt(sent / ddp, 2) + "×" : "—") << "   rejected "
    << v.value("rounds_rejected", 0) << "\n";
  const std::string spark = sparkline(losses, static_cast<std::size_t>(std::max(10, width - 12)));
  if (!spark.empty()) o << "loss  " << spark << "\n";
  o << "\n";
  o << pad("ROUND", 6) << pad("LOSS", 8) << pad("VAL", 8) << pad("TOKENS", 9) << pad("TIME", 9) << pad("COMPUTE", 9)
    << pad("COMM", 9) << pad("WAIT", 9) << pad("SENT", 11) << pad("VS DDP", 9) << "\n";
  int shown = 0;
  for (auto it = st.rounds.rbegin(); it != st.rounds.rend() && shown < a.rounds; ++it, ++shown) {
    const auto& r = it->second;
    const double d = num(r, "ddp_bytes");
    o << pad(std::to_string(it->first), 6) << pad(fmt(num(r, "loss")), 8) << pad(fmt(num(r, "val_loss")), 8)
      << pad(fmt(num(r, "tokens")), 9) << pad(secs(num(r, "round_s")), 9) << pad(secs(num(r, "compute_s")), 9)
      << pad(secs(num(r, "comm_s")), 9) << pad(secs(num(r, "wait_s")), 9) << pad(bytes(num(r, "bytes")), 11)
      << pad(d > 0 ? fmt(num(r, "bytes") / d, 2) + "×" : "—", 9) << "\n";
  }
  if (shown == 0) o << "  (no round committed yet)\n";
  o << "\n";
  o << pad("MEMBER", 7) << "  " << pad("KEY", 10, false) << pad("DEVICE", 8, false) << pad("SLOT", 5) << "  "
    << pad("STATUS", 9, false) << pad("STEP", 7) << pad("TOKENS", 9) << pad("TOK/S", 8) << pad("LOSS", 8)
    << pad("SEEN", 9) << "  " << pad("LINK", 7, false) << pad("REJ", 4) << "\n";
  for (const auto& m : v.at("members")) {
    const bool active = m.value("status", std::string()) == "active";
    std::string status = m.value("status", std::string("?"));
    if (active && m.value("ready", false)) status += "·ready";
    o << pad(std::to_string(m.value("member_id", 0)), 7) << "  "
      << pad(m.value("public_key", std::string()).substr(0, 8) + "…", 10, false)
      << pad(m.value("device", std::string()).substr(0, 7), 8, false) << pad(std::to_string(m.value("slot", 0)), 5)
      << "  " << pad(status, 9, false) << pad(std::to_string(m.value("step", 0)), 7) << pad(fmt(num(m, "tokens")), 9)
      << pad(active ? fmt(num(m, "tokens_per_s")) : "—", 8) << pad(fmt(num(m, "loss")), 8)
      << pad(active ? secs(num(m, "heartbeat_age_s")) : "—", 9) << "  " << pad(m.value("link", std::string()), 7, false)
      << pad(std::to_string(m.value("rounds_rejected", 0)), 4) << "\n";
  }
  o << "\nEVENTS\n";
  shown = 0;
  for (auto it = st.events.rbegin(); it != st.events.rend() && shown < a.events; ++it, ++shown) {
    std::string line = clock_time((*it).value("time", 0.0)) + "  " +
                       pad((*it).value("kind", std::string()), 16, false) + (*it).value("detail", std::string());
    if (static_cast<int>(line.size()) > width) line = line.substr(0, static_cast<std::size_t>(width));
    o << line << "\n";
  }
  if (shown == 0) o << "  (none)\n";
  return o.str();
}

void run_top(const TopArgs& a) {
  std::unique_ptr<ViewSource> source;
  if (a.target.rfind("http://", 0) == 0)
    source = std::make_unique<HttpSource>(a.target);
  else if (a.target.rfind("pico://", 0) == 0)
    source = std::make_unique<BrokerSource>(a.target);
  else if (a.target.rfind("https://", 0) == 0)
    throw Error("pico top reads the broker's plain HTTP listener, not https",
                "give http://HOST:PORT (over the internet: an SSH tunnel, ssh -L PORT:127.0.0.1:PORT HOST)");
  else
    throw Error(str("pico top needs a dashboard URL or a join code, not '", a.target, "'"),
                "e.g. pico top http://127.0.0.1:8080 or pico top 'pico://HOST:PORT/RUN?key=…'");
  std::string run = a.run;
  if (run.empty()) {
    const auto ids = source->run_ids();
    if (ids.empty()) throw Error("the broker has no runs yet", "start one with pico train --config …");
    run = ids.back();  // the newest
  }
  TopState st;
  for (;;) {
    std::string screen;
    try {
      st.merge(source->run(run, st.rounds_after(), st.last_event));
      screen = render(st, a, terminal_width());
    } catch (const Error& e) {
      if (a.once) throw;
      screen = str("pico top: ", e.what(), " — retrying every ", a.interval_s, " s\n");
    }
    if (a.once) {
      std::cout << screen << std::flush;
      return;
    }
    std::cout << "\033[H\033[2J" << screen << std::flush;  // home + clear: redraw in place
    std::this_thread::sleep_for(std::chrono::duration<double>(a.interval_s));
  }
}

void register_top(CLI::App& app) {
  auto args = std::make_shared<TopArgs>();
  auto* sub = app.add_subcommand(
      "top",
      "Watch a run in the terminal: its phase, loss, throughput, time and bytes per round, members and\n"
      "event log, refreshed every second (what the broker's dashboard page shows). Read-only; Ctrl-C quits.");
  sub->add_option("target", args->target,
                  "The broker's dashboard URL (http://HOST:PORT, from pico broker/train --http) or a run's join code "
                  "(pico://HOST:PORT/RUN?key=…)")
      ->required();
  sub->add_option("--run", args->run, "Which run of the broker (default: the join code's, or the newest)");
  sub->add_flag("--once", args->once, "Print the picture once and exit (for scripts and logs)");
  sub->add_option("--interval", args->interval_s, "Seconds between refreshes")
      ->capture_default_str()
      ->check(CLI::Range(0.2, 3600.0));
  sub->add_option("--rounds", args->rounds, "How many recent rounds to list")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  sub->add_option("--events", args->events, "How many recent events to list")
      ->capture_default_str()
      ->check(CLI::Range(0, 100));
  sub->callback([args] { run_top(*args); });
}

}  // namespace

PICO_COMMAND(65, register_top);

}  // namespace pico::apps
