// The broker's HTTP listener, on loopback: a real BrokerService whose members are real CURVE
// clients. Bad requests of every kind get a 4xx and the broker keeps serving; operator
// actions need the token and reach the members; /metrics is read by Prometheus's own text
// parser (python3-prometheus-client).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <thread>

#include "pico/broker/client.h"
#include "pico/broker/service.h"
#include "pico/comm/curve_keys.h"
#include "pico/common/error.h"
#include "support/test_util.h"

namespace pico::broker {
namespace {

// Sends `request` as it is on a fresh connection and returns the status code of the answer
// (0 if the server closed without one). The server closes after each answer.
int raw_status(int port, const std::string& request, std::string* response = nullptr) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  // The server may answer (and close) before it has read everything: stop sending then.
  for (std::size_t off = 0; off < request.size();) {
    const ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<std::size_t>(n);
  }
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) got.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  if (response) *response = got;
  std::smatch m;
  if (!std::regex_search(got, m, std::regex(R"(^HTTP/1\.[01] (\d{3}))"))) return 0;
  return std::stoi(m[1]);
}

std::string get(const std::string& path, const std::string& extra_headers = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra_headers + "\r\n";
}
std::string post(const std::string& path, const std::string& token, const std::string& body = "") {
  return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
         (token.empty() ? std::string() : "Authorization: Bearer " + token + "\r\n") +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::string body_of(const std::string& response) {
  const auto at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

// A broker with --http on a free loopback port, and members speaking CURVE to it.
struct Broker {
  test::TempDir dir;
  std::unique_ptr<BrokerService> service = [this] {
    ServiceOptions o;
    o.state_path = dir.file("broker.db");
    o.http = "0";  // a free port on 127.0.0.1
    o.key_dir = dir.file("keys");
    o.core.member_timeout_s = 60;
    auto s = std::make_unique<BrokerService>(o);
    s->start_background();
    return s;
  }();
  int port = service->http_port();

  std::unique_ptr<BrokerClient> client() {
    BrokerClientOptions o;
    o.endpoint = service->endpoint();
    o.broker_public_key = service->public_key();
    const auto keys = comm::curve_generate_keypair();
    o.public_key = keys.public_key;
    o.secret_key = keys.secret_key;
    o.heartbeat_interval = std::chrono::hours(1);  // the test sends what it means to
    return std::make_unique<BrokerClient>(o);
  }
};

// Creates run "r" (2 members needed), joins two members and runs round 1 to its commit.
struct TwoMembers {
  std::unique_ptr<BrokerClient> a, b;
  std::int64_t ida = -1, idb = -1;
  explicit TwoMembers(Broker& broker) : a(broker.client()), b(broker.client()) {
    a->request(MessageType::kCreateRun, {{"run_id", "r"},
                                         {"config_yaml", "seed: 1\n"},
                                         {"dataset_hash", "D"},
                                         {"num_shards", 2},
                                         {"private", false},
                                         {"token_sha256", ""},
                                         {"theta0_hash", "H0"},
                                         {"min_members", 2},
                                         {"algorithm", "diloco H=10 none"},
                                         {"model_params", 5000}});
    auto join = [](BrokerClient& c, const std::string& device) {
      return c
          .request(MessageType::kJoin,
                   {{"run_id", "r"}, {"dataset_hash", "D"}, {"device", device}, {"endpoint", "tcp://127.0.0.1:9"}})
          .body.at("member_id")
          .get<std::int64_t>();
    };
    ida = join(*a, "cpu");
    idb = join(*b, "cuda:0");
  }
  void round(std::int64_t r) {
    for (auto [c, id] : {std::pair{a.get(), ida}, std::pair{b.get(), idb}})
      c->request(MessageType::kReady, {{"run_id", "r"},
                                       {"member_id", id},
                                       {"round", r},
                                       {"base_round", r - 1},
                                       {"tokens", 640},
                                       {"inner_steps", 10},
                                       {"compute_seconds", 0.5},
                                       {"delta_norm", 1.0},
                                       {"finite", true},
                                       {"loss", 4.0 - 0.1 * static_cast<double>(r)}});
    for (auto [c, id] : {std::pair{a.get(), ida}, std::pair{b.get(), idb}}) {
      // (The broker may ask a member for a θ_g snapshot too: this test's members ignore that.)
      std::optional<Message> start;
      while ((start = c->next_push(std::chrono::seconds(10))) && start->type != MessageType::kRoundStart) {
      }
      ASSERT_TRUE(start.has_value()) << "no round_start for round " << r;
    }
    for (auto [c, id] : {std::pair{a.get(), ida}, std::pair{b.get(), idb}})
      c->request(MessageType::kRoundResult, {{"run_id", "r"},
                                             {"member_id", id},
                                             {"round", r},
                                             {"attempt", 1},
                                             {"ok", true},
                                             {"theta_hash", "H" + std::to_string(r)},
                                             {"bytes_sent", 12345}});
  }
};

TEST(DashboardHttp, BadRequestsGet4xxAndTheBrokerKeepsServing) {
  Broker broker;
  TwoMembers run(broker);
  ASSERT_GT(broker.port, 0);
  const std::string token = broker.service->operator_token();
  ASSERT_EQ(token.size(), 32u);
  struct Case {
    const char* what;
    std::string request;
    int lo, hi;  // expected status range
  };
  const std::vector<Case> cases = {
      {"an unknown run", get("/api/runs/nope"), 404, 404},
      {"a malformed run id", get("/api/runs/a%20b%3Cscript%3E"), 400, 400},
      {"a run id of 200 chars", get("/api/runs/" + std::string(200, 'x')), 400, 400},
      {"a non-integer query", get("/api/runs/r?rounds_after=abc"), 400, 400},
      {"a query with trailing junk", get("/api/runs/r?events_after=12abc"), 400, 400},
      {"a negative events_after", get("/api/runs/r?events_after=-5"), 400, 400},
      {"an out-of-range limit", get("/api/runs/r?rounds_limit=99999999999999999999"), 400, 400},
      {"a repeated query parameter", get("/api/runs/r?rounds_after=1&rounds_after=2"), 400, 400},
      {"an unknown page", get("/nope"), 404, 404},
      {"a path outside the site", get("/../../../etc/passwd"), 400, 404},
      {"a 100 KB header", get("/status", "X-Big: " + std::string(100000, 'a') + "\r\n"), 400, 431},
      {"20000 headers",
       get("/status",
           [] {
             std::string h;
             for (int i = 0; i < 20000; ++i) h += "X-H" + std::to_string(i) + ": v\r\n";
             return h;
           }()),
       400, 431},
      {"a 20 KB URL", get("/api/runs/r?x=" + std::string(20000, 'y')), 400, 431},
      {"not HTTP at all", std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 24), 400, 400},
      {"an unknown method", "BREW /status HTTP/1.1\r\nHost: x\r\n\r\n", 400, 405},
      {"a pause without the token", post("/api/runs/r/pause", ""), 401, 401},
      {"a pause with a wrong token", post("/api/runs/r/pause", std::string(32, '0')), 401, 401},
      {"a token of the wrong length", post("/api/runs/r/pause", token + "0"), 401, 401},
      {"an eviction without the token", post("/api/runs/r/members/0/evict", ""), 401, 401},
      {"evicting an unknown member", post("/api/runs/r/members/99/evict", token), 404, 404},
      {"evicting a member id that is not a number", post("/api/runs/r/members/x1/evict", token), 400, 400},
      {"pausing an unknown run", post("/api/runs/nope/pause", token), 404, 404},
      {"a 64 KB body", post("/api/runs/r/pause", token, std::string(65536, 'z')), 413, 413},
      {"a GET of an action", get("/api/runs/r/pause"), 404, 405},
  };
  for (const auto& c : cases) {
    std::string response;
    const int status = raw_status(broker.port, c.request, &response);
    EXPECT_GE(status, c.lo) << c.what << ":\n" << response.substr(0, 400);
    EXPECT_LE(status, c.hi) << c.what << ":\n" << response.substr(0, 400);
    // Errors that pico answers itself say what was wrong, as JSON.
    if (status == 400 || status == 401 || status == 404) {
      const auto j = nlohmann::json::parse(body_of(response), nullptr, false);
      if (!j.is_discarded()) {
        EXPECT_TRUE(j.contains("error")) << c.what;
      }
    }
  }
  // Still serving: the page, the API, and the members' protocol.
  std::string response;
  EXPECT_EQ(raw_status(broker.port, get("/"), &response), 200);
  EXPECT_NE(response.find("<title>pico dashboard</title>"), std::string::npos);
  EXPECT_NE(response.find("Content-Security-Policy"), std::string::npos);
  EXPECT_EQ(raw_status(broker.port, get("/dashboard.js"), &response), 200);
  EXPECT_NE(response.find("text/javascript"), std::string::npos);
  EXPECT_EQ(raw_status(broker.port, get("/api/runs/r"), &response), 200);
  const auto view = nlohmann::json::parse(body_of(response));
  EXPECT_EQ(view["run_id"], "r");
  EXPECT_EQ(view["members"].size(), 2u);
  EXPECT_FALSE(view["paused"].get<bool>());  // no unauthenticated pause went through
  run.round(1);
  EXPECT_EQ(raw_status(broker.port, get("/status"), &response), 200);
  EXPECT_EQ(nlohmann::json::parse(body_of(response))["runs"][0]["round"], 1);
}

TEST(DashboardHttp, OperatorActionsNeedTheTokenAndReachTheMembers) {
  Broker broker;
  TwoMembers run(broker);
  const std::string token = broker.service->operator_token();
  std::string response;
  EXPECT_EQ(raw_status(broker.port, get("/api/operator"), &response), 401);
  EXPECT_NE(response.find("WWW-Authenticate: Bearer"), std::string::npos);
  EXPECT_EQ(raw_status(broker.port, get("/api/operator", "Authorization: Bearer " + token + "\r\n")), 200);

  // Paused, a run whose members are all ready starts no round; resumed, it does.
  ASSERT_EQ(raw_status(broker.port, post("/api/runs/r/pause", token), &response), 200) << response;
  for (auto [c, id] : {std::pair{run.a.get(), run.ida}, std::pair{run.b.get(), run.idb}})
    c->request(MessageType::kReady, {{"run_id", "r"},
                                     {"member_id", id},
                                     {"round", 1},
                                     {"base_round", 0},
                                     {"tokens", 640},
                                     {"inner_steps", 10},
                                     {"compute_seconds", 0.5},
                                     {"delta_norm", 1.0},
                                     {"finite", true}});
  EXPECT_FALSE(run.a->next_push(std::chrono::milliseconds(1500)).has_value());
  raw_status(broker.port, get("/api/runs/r"), &response);
  EXPECT_EQ(nlohmann::json::parse(body_of(response))["phase"], "paused");
  ASSERT_EQ(raw_status(broker.port, post("/api/runs/r/resume", token), &response), 200) << response;
  auto start = run.a->next_push(std::chrono::seconds(5));
  ASSERT_TRUE(start.has_value());
  EXPECT_EQ(start->type, MessageType::kRoundStart);

  // An eviction reaches the member (through the broker's message loop) and its key is refused.
  ASSERT_EQ(
      raw_status(broker.port, post("/api/runs/r/members/" + std::to_string(run.idb) + "/evict", token), &response), 200)
      << response;
  std::optional<Message> pushed;
  for (int i = 0; i < 10 && (!pushed || pushed->type != MessageType::kEvicted); ++i)
    pushed = run.b->next_push(std::chrono::seconds(1));
  ASSERT_TRUE(pushed.has_value());
  EXPECT_EQ(pushed->type, MessageType::kEvicted);
  EXPECT_EQ(pushed->body.value("reason", std::string()), "evicted by the operator");
  try {
    run.b->request(MessageType::kJoin,
                   {{"run_id", "r"}, {"dataset_hash", "D"}, {"device", "cpu"}, {"endpoint", "tcp://x:1"}});
    FAIL() << "an evicted key joined again";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("removed your key"), std::string::npos) << e.what();
  }
  raw_status(broker.port, get("/api/runs/r"), &response);
  const auto view = nlohmann::json::parse(body_of(response));
  EXPECT_EQ(view["active_members"], 1);
  std::vector<std::string> kinds;
  for (const auto& e : view["events"]) kinds.push_back(e["kind"]);
  for (const char* k : {"paused", "resumed", "evict"})
    EXPECT_NE(std::find(kinds.begin(), kinds.end(), k), kinds.end()) << k;
}

TEST(DashboardHttp, MetricsAreReadByPrometheusOwnTextParser) {
  Broker broker;
  TwoMembers run(broker);
  run.round(1);
  run.round(2);
  const std::string url = "http://127.0.0.1:" + std::to_string(broker.port) + "/metrics";
  const auto r = test::run_command(test::python() + " " + test::source_dir() + "/tests/python/check_metrics.py " + url);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto m = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(m["content_type"], "text/plain; version=0.0.4; charset=utf-8");
  // sample name + labels → value, as the parser read them.
  const auto& s = m["samples"];
  EXPECT_EQ(s["pico_run_rounds_total{run=r}"], 2.0);
  EXPECT_EQ(s["pico_run_members{run=r}"], 2.0);
  EXPECT_EQ(s["pico_run_tokens_total{run=r}"], 4 * 640.0);
  EXPECT_EQ(s["pico_run_bytes_sent_total{run=r}"], 4 * 12345.0);
  EXPECT_NEAR(s["pico_run_loss{run=r}"].get<double>(), 3.8, 1e-12);
  // 2 × 12345 bytes over 10 steps × 2(2−1) × 4 bytes × 5000 params.
  EXPECT_NEAR(s["pico_run_round_bytes_ratio_to_ddp{run=r}"].get<double>(), 24690.0 / 400000.0, 1e-12);
  EXPECT_EQ(s["pico_member_tokens_total{device=cuda:0,member=1,run=r}"], 2 * 640.0);
  EXPECT_EQ(s["pico_member_rounds_total{device=cpu,member=0,run=r}"], 2.0);
  EXPECT_TRUE(s.contains("pico_run_round_seconds{part=comm,run=r}"));
  EXPECT_TRUE(s["pico_run_val_loss{run=r}"].is_null());  // NaN: no member reported one
  EXPECT_GE(m["families"].size(), 15u);
}

}  // namespace
}  // namespace pico::broker
