import Foundation
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// `[metrics]` with the real binary, scraped over TCP by plain HTTP and by a real Prometheus.
///
/// The node_exporter textfile written and rewritten, both in valid exposition format (our parser, and `promtool
/// check metrics`), neither holding a token or a secret; the listener's bounds; a textfile directory that cannot be
/// written, logged once. Prometheus and promtool come from Debian's `prometheus` package: installed, or unpacked into
/// `.build/tools/prometheus` by `scripts/install-deps` (``PrometheusTools``).
@Suite(.serialized, .timeLimit(.minutes(3))) struct MetricsExposureEndToEndTests {
    /// Settings with a listener on `port` and a textfile rewritten every second.
    private static func settings(port: Int, textfile: String) -> String {
        DaemonHarness.fastSettings + """

            [metrics]
            listen = "127.0.0.1:\(port)"
            textfile = "\(textfile)"
            textfile_interval = "1s"
            """
    }

    @Test func theListenerAndTheTextfileServeTheSocketsMetricsWithoutSecrets() async throws {
        let port = try freeTCPPort()
        try await DaemonHarness.with { harness in
            let directory = harness.root + "/textfile"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let textfile = directory + "/tokend.prom"
            try harness.writeSettings(Self.settings(port: port, textfile: textfile))
            try harness.writeInstance("alpha", secret: "s3cret-alpha-value")
            try harness.start()
            try await harness.waitUntilReady()
            let token = try #require(try await harness.token("alpha"))

            // The listener: GET /metrics, the same families as the socket's /metrics.
            let scrape = try tcpExchange(port: port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            #expect(scrape.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(scrape.prefix(200))")
            #expect(scrape.lowercased().contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"))
            let body = httpBody(scrape)
            #expect(body.contains("tokend_token_valid{instance=\"alpha\"} 1\n"))
            #expect(body.contains("tokend_refreshes_total{instance=\"alpha\",result=\"success\"} 1\n"))
            #expect(ExpositionFormat.problems(body) == [])
            try expectPromtoolAccepts(body)
            let socket = try harness.curl(["http://localhost/metrics"])
            #expect(socket.status == 200)
            #expect(ExpositionFormat.families(body) == ExpositionFormat.families(socket.body))
            for text in [body, socket.body] {
                #expect(!text.contains(token))
                #expect(!text.contains("s3cret-alpha-value"))
            }

            // Everything else: 404, and 405 for other methods on /metrics; HEAD has the length and no body.
            #expect(try tcpExchange(port: port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").hasPrefix("HTTP/1.1 404"))
            #expect(
                try tcpExchange(port: port, "GET /v1/tokens/alpha HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").hasPrefix(
                    "HTTP/1.1 404"
                )
            )
            let post = try tcpExchange(port: port, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            #expect(post.hasPrefix("HTTP/1.1 405"))
            #expect(post.lowercased().contains("allow: get, head\r\n"))
            let head = try tcpExchange(port: port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(head.hasPrefix("HTTP/1.1 200"))
            #expect(httpBody(head).isEmpty)
            // Keep-alive, as Prometheus scrapes: two answers on one connection.
            let twice = try tcpExchange(
                port: port,
                "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            #expect(twice.components(separatedBy: "HTTP/1.1 200 OK\r\n").count == 3)

            // The textfile: there, valid, no token, and rewritten (a new file renamed over the old one each time).
            try await eventually("the textfile is written") { FileManager.default.fileExists(atPath: textfile) }
            let first = try inode(textfile)
            try await eventually("the textfile is rewritten") { try inode(textfile) != first }
            let written = try String(contentsOfFile: textfile, encoding: .utf8)
            #expect(written.contains("tokend_token_valid{instance=\"alpha\"} 1\n"))
            #expect(ExpositionFormat.problems(written) == [])
            try expectPromtoolAccepts(written)
            #expect(!written.contains(token) && !written.contains("s3cret-alpha-value"))
            let attributes = try FileManager.default.attributesOfItem(atPath: textfile)
            #expect((attributes[.posixPermissions] as? Int) == 0o644)
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["tokend.prom"])

            // A symbolic link put in the file's place is replaced, not followed.
            let elsewhere = harness.root + "/elsewhere.prom"
            try "untouched\n".write(toFile: elsewhere, atomically: true, encoding: .utf8)
            try FileManager.default.removeItem(atPath: textfile)
            try FileManager.default.createSymbolicLink(atPath: textfile, withDestinationPath: elsewhere)
            try await eventually("the link is replaced by the file") {
                (try? FileManager.default.destinationOfSymbolicLink(atPath: textfile)) == nil
                    && FileManager.default.fileExists(atPath: textfile)
            }
            #expect(try String(contentsOfFile: elsewhere, encoding: .utf8) == "untouched\n")

            // A reload with another [metrics] keeps the running one and says so.
            let other = try freeTCPPort()
            try harness.writeSettings(Self.settings(port: other, textfile: textfile))
            harness.signal(SIGHUP)
            try await harness.waitUntilReady(count: 2)
            #expect(harness.log.contains("[metrics] changed; the change takes effect when tokend restarts"))
            #expect(try tcpExchange(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").hasPrefix("HTTP/1.1 200"))

            // Stopped: the listener is closed and the textfile removed.
            #expect(try await harness.stop() == 0)
            #expect(connectTCP(port: port) == nil)
            #expect(!FileManager.default.fileExists(atPath: textfile))
        }
    }

    /// Stock Prometheus, with a scrape job any operator would write, scrapes the listener every second.
    ///
    /// Its HTTP API then has tokend's per-instance expiry for the instance, and the expiry it implies (the scrape's
    /// timestamp plus the seconds left) is the token's `expires_at` from `/v1/instances`. tokend's `instance` label meets
    /// Prometheus's own target label of that name, so Prometheus keeps it as `exported_instance` (README, "Metrics
    /// for Prometheus").
    @Test(
        .enabled(
            if: PrometheusTools.binary("prometheus") != nil,
            "skipped: prometheus is neither installed nor unpacked into .build/tools/prometheus (scripts/install-deps)"
        ),
        .timeLimit(.minutes(2))
    )
    func aRealPrometheusScrapesTheListener() async throws {
        let prometheus = try #require(PrometheusTools.binary("prometheus"))
        let port = try freeTCPPort()
        let webPort = try freeTCPPort()
        try await DaemonHarness.with { harness in
            try harness.writeSettings(Self.settings(port: port, textfile: harness.root + "/tokend.prom"))
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()
            let listed = try await harness.get("/v1/instances").json(API.InstancesBody.self).instances
            let expiresAt = try #require(listed.first { $0.name == "alpha" }?.expires_at)

            let directory = harness.root + "/prometheus"
            try FileManager.default.createDirectory(atPath: directory + "/data", withIntermediateDirectories: true)
            try """
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: tokend
                static_configs:
                  - targets: ["127.0.0.1:\(port)"]

            """.write(toFile: directory + "/prometheus.yml", atomically: true, encoding: .utf8)
            let server = try PrometheusProcess(
                binary: prometheus,
                arguments: [
                    "--config.file=\(directory)/prometheus.yml", "--storage.tsdb.path=\(directory)/data",
                    "--web.listen-address=127.0.0.1:\(webPort)", "--log.level=warn",
                ],
                log: directory + "/prometheus.log"
            )
            harness.onTearDown { server.stop() }

            let metric = "tokend_token_expires_in_seconds"
            let selector = "\(metric){job=\"tokend\",exported_instance=\"alpha\"}"
            // The scrape's own timestamp plus the seconds left then: the expiry, whenever it was scraped.
            let impliedExpiry = "timestamp(\(selector)) + \(selector)"
            do {
                try await eventually("Prometheus has scraped \(metric) for alpha", timeout: 60) {
                    // Refused until Prometheus listens.
                    (try? prometheusQuery(port: webPort, impliedExpiry))?.count == 1
                }
            } catch {
                Issue.record("Prometheus's log: \((try? String(contentsOfFile: directory + "/prometheus.log", encoding: .utf8)) ?? "")")
                throw error
            }
            let expiry = try #require(try prometheusQuery(port: webPort, impliedExpiry).first?.value)
            // expires_at is whole seconds, the metric has the fraction.
            #expect(abs(expiry - Double(expiresAt)) < 1.5, "Prometheus implies \(expiry), /v1/instances says \(expiresAt)")
            let raw = try prometheusQuery(port: webPort, selector)
            #expect(raw.count == 1 && raw[0].labels["instance"] == "127.0.0.1:\(port)")
            #expect(try prometheusQuery(port: webPort, "up{job=\"tokend\"}").map(\.value) == [1])
            #expect(try await harness.stop() == 0)
        }
    }

    /// Like the socket: a head must arrive in time, and connections past the cap are answered 503 and closed.
    @Test func theListenerIsBounded() async throws {
        let port = try freeTCPPort()
        try await DaemonHarness.with { harness in
            try harness.writeSettings("request_head_timeout = \"1s\"\n" + Self.settings(port: port, textfile: harness.root + "/t.prom"))
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()

            // A head that never ends is cut off after request_head_timeout.
            let slow = try #require(connectTCP(port: port))
            defer { close(slow) }
            _ = Array("GET /metrics HTTP/1.1\r\nHost: x\r\n".utf8).withUnsafeBytes {
                send(slow, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            let stopwatch = Stopwatch()
            #expect(readUntilClosed(slow, timeout: 10).isEmpty)
            #expect(stopwatch.elapsed < 5)

            // 16 idle connections hold the listener; the next one is refused with 503, and a freed place is taken.
            var idle: [Int32] = []
            defer { for fd in idle { close(fd) } }
            for _ in 0..<16 { idle.append(try #require(connectTCP(port: port))) }
            try await eventually("the 17th connection is refused") {
                let answer = try tcpExchange(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return answer.hasPrefix("HTTP/1.1 503")
            }
            close(idle.removeLast())
            try await eventually("a freed place is taken") {
                try tcpExchange(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").hasPrefix("HTTP/1.1 200")
            }
            #expect(try await harness.stop() == 0)
        }
    }

    /// A directory that cannot be written is logged once, not every interval; once it can, the file is written and
    /// the log says so.
    @Test func anUnwritableTextfileDirectoryIsLoggedOnce() async throws {
        let port = try freeTCPPort()
        try await DaemonHarness.with { harness in
            let directory = harness.root + "/not-yet"
            try harness.writeSettings(Self.settings(port: port, textfile: directory + "/tokend.prom"))
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()
            let failure = "metrics textfile not written"
            try await eventually("the failure is logged") { harness.log.contains(failure) }
            // Three more intervals of failing writes: still one line.
            let window = Deadline(3.5)
            while !window.passed {
                #expect(harness.log.components(separatedBy: failure).count == 2)
                try await Task.sleep(for: .milliseconds(250))
            }
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
            try await eventually("the textfile is written") { FileManager.default.fileExists(atPath: directory + "/tokend.prom") }
            try await eventually("the recovery is logged") { harness.log.contains("metrics textfile written again") }
            #expect(harness.log.components(separatedBy: failure).count == 2)
            #expect(try await harness.stop() == 0)
        }
    }

    /// `tokend check`: a non-loopback listener is a warning (exit 0), a host name an error with file and line.
    @Test func checkWarnsOfANonLoopbackListenerAndRefusesAHostName() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeInstance("alpha")
            try harness.writeSettings("[metrics]\nlisten = \"0.0.0.0:9464\"\n")
            let warned = try harness.runCLI(["check", "--config-dir", harness.configDir, "--skip-credentials"])
            #expect(warned.status == 0)
            #expect(warned.stderr.contains("tokend.toml:2: warning: metrics.listen: 0.0.0.0:9464 is not a loopback address"))
            #expect(warned.stdout.contains("note: [metrics] takes effect at restart"))
            try harness.writeSettings("\n[metrics]\nlisten = \"localhost:9464\"\n")
            let refused = try harness.runCLI(["check", "--config-dir", harness.configDir, "--skip-credentials"])
            #expect(refused.status == 1)
            #expect(refused.stderr.contains("tokend.toml:3: metrics.listen: \"localhost\" is not an IP address literal"))
        }
    }
}

extension DaemonHarness {
    fileprivate func writeSettings(_ text: String) throws {
        try text.write(toFile: configDir + "/tokend.toml", atomically: true, encoding: .utf8)
    }
}

// MARK: - Plain HTTP over TCP

/// A port nothing listens on right now (bound and released; another process could take it in between).
private func freeTCPPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EIO) }
    defer { close(fd) }
    var address = loopback(port: 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw POSIXError(.EADDRINUSE) }
    return Int(UInt16(bigEndian: address.sin_port))
}

private func loopback(port: UInt16) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    return address
}

/// A connected TCP socket to 127.0.0.1:`port`, or nil when nothing accepts.
private func connectTCP(port: Int) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    var address = loopback(port: UInt16(port))
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    guard connected else {
        close(fd)
        return nil
    }
    return fd
}

/// Sends `request` to 127.0.0.1:`port` and returns what comes back until the listener closes.
private func tcpExchange(port: Int, _ request: String) throws -> String {
    guard let fd = connectTCP(port: port) else { throw POSIXError(.ECONNREFUSED) }
    defer { close(fd) }
    return exchange(on: fd, request)
}

/// The body of the one response in `response`.
private func httpBody(_ response: String) -> String {
    guard let end = response.range(of: "\r\n\r\n") else { return "" }
    return String(response[end.upperBound...])
}

private func inode(_ path: String) throws -> Int {
    try (FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? Int) ?? -1
}

/// `promtool check metrics` on `text`; skipped, with the reason as a test issue note, only where no promtool exists.
private func expectPromtoolAccepts(_ text: String) throws {
    guard let promtool = PrometheusTools.binary("promtool") else {
        print("note: promtool check metrics skipped: promtool is not installed and not unpacked into .build/tools/prometheus")
        return
    }
    let result = try runCommand([promtool, "check", "metrics"], stdin: text)
    #expect(result.status == 0, "promtool check metrics: \(result.stdout)\(result.stderr)")
}

// MARK: - Prometheus

/// Debian's `prometheus` package: installed in /usr/bin, or unpacked by `scripts/install-deps` into
/// `.build/tools/prometheus` of this checkout (no service, no user).
enum PrometheusTools {
    static func binary(_ name: String) -> String? {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        let candidates = ["/usr/bin/\(name)", root.appendingPathComponent(".build/tools/prometheus/usr/bin/\(name)").path]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

/// A Prometheus server of the test's own, stopped (SIGTERM, then SIGKILL) at teardown whatever happened.
private final class PrometheusProcess: Sendable {
    private let pid: pid_t

    init(binary: String, arguments: [String], log: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: (log as NSString).deletingLastPathComponent)
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        pid = process.processIdentifier
    }

    func stop() {
        kill(pid, SIGTERM)
        let deadline = Deadline(10)
        var status: Int32 = 0
        while !deadline.passed {
            if waitpid(pid, &status, WNOHANG) == pid { return }
            usleep(50_000)
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
    }
}

/// The samples of an instant query to Prometheus's HTTP API on 127.0.0.1:`port`: labels and value each.
private func prometheusQuery(port: Int, _ query: String) throws -> [(labels: [String: String], value: Double)] {
    let encoded = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? query
    let response = try tcpExchange(
        port: port,
        "GET /api/v1/query?query=\(encoded) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    struct Answer: Decodable {
        struct Data: Decodable {
            struct Sample: Decodable {
                var metric: [String: String]
                var value: [Value]
            }
            var result: [Sample]
        }
        enum Value: Decodable {
            case time(Double)
            case text(String)

            init(from decoder: any Decoder) throws {
                let container = try decoder.singleValueContainer()
                if let time = try? container.decode(Double.self) {
                    self = .time(time)
                } else {
                    self = .text(try container.decode(String.self))
                }
            }
        }
        var status: String
        var data: Data
    }
    guard response.hasPrefix("HTTP/1.1 200") else { return [] }
    let answer = try JSONDecoder().decode(Answer.self, from: Foundation.Data(httpBody(response).utf8))
    return answer.data.result.compactMap { sample in
        guard sample.value.count == 2, case .text(let text) = sample.value[1], let value = Double(text) else { return nil }
        return (sample.metric, value)
    }
}

// MARK: - The exposition format

/// A small checker of the Prometheus text exposition format (0.0.4): every line a `# HELP`, a `# TYPE` or a sample
/// `name{label="value",…} number`, names and label names well formed, label values properly escaped, each family's
/// TYPE once and before its samples, the text ending in a newline.
enum ExpositionFormat {
    static func problems(_ text: String) -> [String] {
        var problems: [String] = []
        guard text.hasSuffix("\n") else { return ["does not end with a newline"] }
        var typed: [String: String] = [:]
        var sampled: Set<String> = []
        for line in text.dropLast().split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# HELP ") || line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ", maxSplits: 3)
                guard parts.count >= 3, isName(parts[2]) else {
                    problems.append("bad comment: \(line)")
                    continue
                }
                if parts[1] == "TYPE" {
                    let name = String(parts[2])
                    let kinds = ["counter", "gauge", "histogram", "summary", "untyped"]
                    if parts.count != 4 || !kinds.contains(String(parts[3])) { problems.append("bad TYPE: \(line)") }
                    if typed[name] != nil { problems.append("TYPE twice: \(name)") }
                    if sampled.contains(name) { problems.append("TYPE after samples: \(name)") }
                    typed[name] = parts.count == 4 ? String(parts[3]) : nil
                }
                continue
            }
            guard !line.hasPrefix("#"), !line.isEmpty else {
                if !line.isEmpty { continue }
                problems.append("empty line")
                continue
            }
            guard let name = sample(line) else {
                problems.append("bad sample: \(line)")
                continue
            }
            sampled.insert(name)
            let family = ["_total", "_bucket", "_sum", "_count"].reduce(name) { name, suffix in
                typed[name] == nil && name.hasSuffix(suffix) && typed[String(name.dropLast(suffix.count))] != nil
                    ? String(name.dropLast(suffix.count)) : name
            }
            if typed[family] == nil { problems.append("sample without TYPE: \(line)") }
        }
        return problems
    }

    /// The metric names of the `# TYPE` lines.
    static func families(_ text: String) -> Set<String> {
        Set(text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { String($0.split(separator: " ")[2]) })
    }

    private static func isName<S: StringProtocol>(_ name: S) -> Bool {
        guard let first = name.unicodeScalars.first, first.isLetterOrUnderscore || first == ":" else { return false }
        return name.unicodeScalars.allSatisfy { $0.isLetterOrUnderscore || $0 == ":" || ("0"..."9").contains($0) }
    }

    /// The sample's metric name, or nil when the line is not a well-formed sample.
    private static func sample(_ line: Substring) -> String? {
        let scalars = Array(line.unicodeScalars)
        var index = 0
        while index < scalars.count, scalars[index] != "{", scalars[index] != " " { index += 1 }
        let name = String(String.UnicodeScalarView(scalars[0..<index]))
        guard isName(name), index < scalars.count else { return nil }
        if scalars[index] == "{" {
            index += 1
            while index < scalars.count, scalars[index] != "}" {
                let start = index
                while index < scalars.count, scalars[index] != "=" { index += 1 }
                let label = String(String.UnicodeScalarView(scalars[start..<index]))
                guard isName(label), !label.contains(":"), index + 1 < scalars.count, scalars[index + 1] == "\"" else { return nil }
                index += 2
                while index < scalars.count, scalars[index] != "\"" {
                    if scalars[index] == "\\" {
                        guard index + 1 < scalars.count, ["\\", "\"", "n"].contains(scalars[index + 1]) else { return nil }
                        index += 1
                    }
                    index += 1
                }
                guard index < scalars.count else { return nil }
                index += 1
                if index < scalars.count, scalars[index] == "," { index += 1 }
            }
            guard index < scalars.count else { return nil }
            index += 1
        }
        guard index < scalars.count, scalars[index] == " " else { return nil }
        let rest = String(String.UnicodeScalarView(scalars[(index + 1)...])).split(separator: " ")
        guard (1...2).contains(rest.count), ["NaN", "+Inf", "-Inf"].contains(String(rest[0])) || Double(rest[0]) != nil else { return nil }
        if rest.count == 2, Int64(rest[1]) == nil { return nil }
        return name
    }
}

extension Unicode.Scalar {
    fileprivate var isLetterOrUnderscore: Bool { ("a"..."z").contains(self) || ("A"..."Z").contains(self) || self == "_" }
}
